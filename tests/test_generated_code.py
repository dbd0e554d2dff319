"""The checked-in gRPC modules are exactly what the pinned generators make of the protos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "proto" / "toolvault" / "v1"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_text() for p in (tmp_path / "toolvault" / "v1").iterdir()}
    checked_in = {
        p.name: p.read_text() for p in GENERATED.iterdir() if p.name.endswith((".py", ".pyi"))
    }
    checked_in.pop("__init__.py")
    assert sorted(fresh) == sorted(checked_in), "run: python proto/generate.py"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stale generated files {stale}; run: python proto/generate.py"
