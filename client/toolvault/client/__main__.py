"""Run the command-line interface as `python -m toolvault.client`."""

import sys

from toolvault.client.cli import main

sys.exit(main())
