"""Files on the command line: --file reads a call's files in, --save writes its files out.

Names come from the server, so they are checked again before anything is written: only a
plain file name lands in the directory, never a path out of it, and an existing file (or
a symlink in its place) is replaced only with --force, and never followed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from toolvault.cli._input import UsageError
from toolvault.client import Execution

__all__ = ["add_save_arguments", "print_outputs", "read_files", "save_outputs"]


def add_save_arguments(cmd: argparse.ArgumentParser) -> None:
    """Add --save DIR and --force to a command that shows an execution."""
    cmd.add_argument(
        "--save",
        metavar="DIR",
        help="write the files the function left in out/ into DIR (made if missing)",
    )
    cmd.add_argument("--force", action="store_true", help="with --save: replace existing files")


def read_files(paths: Sequence[str]) -> dict[str, bytes]:
    """The files of --file PATH options, by their base names."""
    files: dict[str, bytes] = {}
    for path in paths:
        name = os.path.basename(path)
        if name in files:
            raise UsageError(f"--file {path}: another --file is also named {name!r}")
        try:
            files[name] = Path(path).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
    return files


def save_outputs(execution: Execution, directory: str, *, force: bool) -> list[Path]:
    """Write ``execution``'s output files into ``directory``; the paths written.

    Raises:
        UsageError: A name is not a plain file name, a file exists (without ``force``),
            the bytes of a file are no longer kept, or writing fails.
    """
    names = [file.name for file in execution.files if file.direction == "out"]
    missing = [name for name in names if name not in execution.output_files]
    if missing:
        raise UsageError(
            f"the server no longer keeps the bytes of {', '.join(missing)} (the output files "
            "of an execution are kept for the server's file retention period)"
        )
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot make {directory}: {error.strerror or error}") from error
    for name in execution.output_files:
        _check_name(name)
    return [
        _write(folder, name, content, force=force)
        for name, content in sorted(execution.output_files.items())
    ]


def print_outputs(execution: Execution, saved: Sequence[Path]) -> None:
    """Say on stderr which output files were saved where, or that there are some to save."""
    if saved:
        for path in saved:
            print(f"saved {path}", file=sys.stderr)
    elif execution.output_files:
        names = ", ".join(sorted(execution.output_files))
        print(f"output files (not saved; --save DIR writes them): {names}", file=sys.stderr)


def _check_name(name: str) -> None:
    if (
        not name
        or name.startswith(".")
        or any(char in "/\\" or ord(char) < 0x20 for char in name)
        or os.path.basename(name) != name
    ):
        raise UsageError(f"refusing to save a file named {name!r}: not a plain file name")


def _write(folder: Path, name: str, content: bytes, *, force: bool) -> Path:
    path = folder / name
    # Never through a symlink; with --force an existing file is truncated, not followed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_TRUNC if force else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise UsageError(f"{path} exists: pass --force to replace it") from None
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from error
    with os.fdopen(fd, "wb") as file:
        file.write(content)
    return path
