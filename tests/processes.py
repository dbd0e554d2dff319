"""The process tree as /proc shows it, for tests that check what a call left behind."""

from __future__ import annotations

from pathlib import Path


def children_by_parent() -> dict[int, list[int]]:
    """The live processes' pids by their parent's pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # The name in parentheses may hold spaces; the parent's pid follows the state.
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    children = children_by_parent()
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (as warm workers are between calls)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split() or [""])[0] == "T"
    except OSError:
        return False
