"""Files with the language layer removed: full Python against the working directory's walls.

The code runs in ``tests.security.unrestricted_host`` (the ``host`` fixture of
test_kernel_layer: fresh, spares and warm), so nothing of ``open()``'s checks helps: the
private root, read-only but for the working directory, and the sandbox's collection of
out/ (regular files only, never through a symlink, within the caps) must hold alone.
"""

from __future__ import annotations

import base64
import errno
import json
from typing import Any

from tests.security.test_kernel_layer import Host, host

__all__ = ["host"]

CAPS = {"max_files": 2, "max_file_bytes": 100, "max_files_bytes": 150}


def files_in(**files: bytes) -> dict[str, str]:
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def one(host: Host, source: str, **fields: Any) -> dict[str, Any]:
    (outcome,) = host.run({"source": source, "limits": CAPS, **fields})
    return outcome


def test_cant_write_outside_the_working_directory(host: Host) -> None:
    host.needs("private-root")
    seen = host.result(
        """\
def main():
    def write(path):
        with open(path, "w") as file:
            file.write("x")
    paths = ["/x", "/tmp/x", "/etc/x", "/dev/shm/x", "/proc/self/cwd/../x", "../x",
             "/sandbox/../x", "/usr/lib/x"]
    found = {path: attempt(lambda: write(path)) for path in paths}
    found["here"] = attempt(lambda: write("here.txt"))
    found["out"] = attempt(lambda: write("out/ok.txt"))
    found["mounts"] = [line.split()[1] for line in open("/proc/self/mounts")
                       if " rw," in line and line.split()[1] != "/proc"]
    return found
"""
    )
    assert seen.pop("here") == ["ok", None] and seen.pop("out") == ["ok", None]
    # The working directory is the one writable mount.
    assert seen.pop("mounts") == ["/sandbox"]
    for path, outcome in seen.items():
        assert outcome[0] != "ok", path
        assert outcome[1] in (errno.EROFS, errno.EACCES, errno.ENOENT, errno.EPERM), (path, outcome)


def test_a_symlink_or_anything_but_a_regular_file_in_out_is_not_followed(host: Host) -> None:
    host.needs("private-root")
    secret = str(host.planted[1])  # 0644 beside the hidden directory: gone from the root
    for make, problem in (
        (f"os.symlink({secret!r}, 'out/link')", "out/link is not a regular file"),
        ("os.symlink('/etc/hostname', 'out/link')", "out/link is not a regular file"),
        ("os.symlink('../data.csv', 'out/link')", "out/link is not a regular file"),
        ("os.mkfifo('out/fifo')", "out/fifo is not a regular file"),
        ("os.mkdir('out/sub')", "out/sub is not a regular file"),
        ("os.rmdir('out'); os.symlink('/', 'out')", "out/ is not a directory"),
        ("open('out/.hidden', 'w').close()", "the name of 'out/.hidden' starts with \".\""),
    ):
        outcome = one(
            host,
            f"def main():\n    {make}\n    return 1\n",
            files=files_in(**{"data.csv": b"a,b\n"}),
        )
        assert outcome["status"] == "error", (make, outcome)
        assert (outcome["error_type"], outcome["error_message"]) == ("OutputFilesError", problem)
        assert outcome["files"] == {}


def test_output_files_over_the_caps_end_with_output_limit_and_none_is_read(host: Host) -> None:
    for source, message in (
        (
            "def main():\n    for n in range(3):\n        open(f'out/{n}', 'w').close()\n",
            "out/ holds 3 files, more than the limit of 2",
        ),
        (
            # A sparse file of 1 MiB, far over the cap: refused by its size, never read.
            "def main():\n    os.truncate(os.open('out/big', os.O_CREAT | os.O_WRONLY), 1 << 20)\n",
            "out/ holds out/big of 1048576 bytes, over 100 a file",
        ),
        (
            "def main():\n    open('out/a', 'wb').write(b'x' * 101)\n",
            "out/ holds out/a of 101 bytes, over 100 a file",
        ),
        (
            "def main():\n    open('out/a', 'wb').write(b'x' * 100)\n"
            "    open('out/b', 'wb').write(b'x' * 51)\n",
            "out/ holds files over the limit of 150 bytes",
        ),
    ):
        outcome = one(host, source)
        assert outcome["status"] == "output_limit", (source, outcome)
        assert outcome["error_message"].startswith(message), outcome["error_message"]
        assert outcome["files"] == {}


def test_input_files_are_read_only_and_nothing_of_a_call_reaches_the_next(host: Host) -> None:
    look = """\
def main():
    return {
        "names": sorted(os.listdir(".")),
        "out": os.listdir("out"),
        "modes": {name: oct(os.stat(name).st_mode & 0o777) for name in os.listdir(".")},
    }
"""
    leave = look.replace(
        "def main():\n",
        "def main():\n    open('out/left', 'w').close()\n    open('left', 'w').close()\n",
    )
    # One after the other, under one filename: one warm worker, where the host is warm.
    (first,) = host.run(
        {"source": leave, "limits": CAPS, "files": files_in(**{"data.csv": b"1"}), "filename": "f"}
    )
    (second,) = host.run({"source": look, "limits": CAPS, "filename": "f"})
    assert first["status"] == "ok", first
    assert json.loads(first["result_json"])["modes"]["data.csv"] == "0o444"
    assert first["files"] == {"left": ""}
    assert json.loads(second["result_json"]) == {
        "names": ["out"],
        "out": [],
        "modes": {"out": "0o700"},
    }
