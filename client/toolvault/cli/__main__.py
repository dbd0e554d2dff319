"""Run the command-line interface as `python -m toolvault.cli`."""

import sys

from toolvault.cli._main import main

sys.exit(main())
