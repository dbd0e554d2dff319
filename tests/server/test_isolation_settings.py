"""TOOLVAULT_REQUIRE_ISOLATION and the sandbox-layer gauge, on real `toolvault serve` processes.

The layers this host gives the sandbox come from ``toolvault --json doctor``, which probes
them as the server does at start-up; a test that needs a missing layer is skipped on a
host that has them all.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.client import Client

REFUSED = (
    "refusing to start: sandbox layers required by TOOLVAULT_REQUIRE_ISOLATION are not in "
    "effect on this host: "
)
# Layers this host is expected to have (the kernel-layer tests rely on them too).
ACTIVE_HERE = ("private-root", "seccomp", "network-namespace")


@dataclass(frozen=True)
class Layer:
    """One sandbox layer as `toolvault doctor` prints it."""

    name: str
    active: bool
    detail: str


@pytest.fixture(scope="module")
def layers() -> dict[str, Layer]:
    """The layers of this host, in doctor's order, by name."""
    doctor = subprocess.run(
        [TOOLVAULT, "--json", "doctor"], capture_output=True, text=True, check=True
    )
    return {entry["name"]: Layer(**entry) for entry in json.loads(doctor.stdout)}


def server(tmp_path: Path, required: str, **env: str) -> ServerProcess:
    """A server (not started) on a SQLite file that requires the ``required`` layers."""
    return ServerProcess(
        db=f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path / "data",
        env={"TOOLVAULT_REQUIRE_ISOLATION": required, **env},
    )


def refused(server: ServerProcess) -> tuple[int | None, str]:
    """Start ``server``, which must exit without listening; its exit code and its log."""
    with pytest.raises(RuntimeError, match="server did not start"):
        server.start()  # returns once the process ends, or raises once it listens
    assert server.process is not None
    log = "".join(server.log)
    assert "listening on" not in log
    return server.process.returncode, log


def refusal(log: str) -> str:
    """The one ERROR line of a server's log, without its time and level."""
    (line,) = [line for line in log.splitlines() if " ERROR " in line]
    return line.split(" ERROR toolvault.server: ", 1)[1]


def test_a_required_layer_this_host_lacks_stops_the_server_naming_it_and_why(
    tmp_path: Path, layers: dict[str, Layer]
) -> None:
    if layers["cgroup-memory"].active:
        pytest.skip("this host has the cgroup memory layer")

    code, log = refused(server(tmp_path, "seccomp, cgroup-memory"))

    assert code == 1
    assert refusal(log) == REFUSED + f"cgroup-memory ({layers['cgroup-memory'].detail})"


def test_a_layer_required_twice_is_named_once(tmp_path: Path, layers: dict[str, Layer]) -> None:
    if layers["cgroup-memory"].active:
        pytest.skip("this host has the cgroup memory layer")

    code, log = refused(server(tmp_path, "cgroup-memory,cgroup-memory"))

    assert code == 1
    assert refusal(log) == REFUSED + f"cgroup-memory ({layers['cgroup-memory'].detail})"


def test_requiring_all_layers_stops_the_server_naming_every_missing_one(
    tmp_path: Path, layers: dict[str, Layer]
) -> None:
    missing = [layer for layer in layers.values() if not layer.active]
    if not missing:
        pytest.skip("every layer is active on this host")

    code, log = refused(server(tmp_path, "all"))

    assert code == 1
    assert refusal(log) == REFUSED + "; ".join(f"{m.name} ({m.detail})" for m in missing)


@pytest.mark.parametrize(
    ("required", "unknown"),
    [
        ("seccomp,sekcomp", "['sekcomp']"),
        ("Seccomp", "['Seccomp']"),  # names are doctor's, exactly
        ("all,cgroups", "['cgroups']"),  # all does not hide a misspelt name beside it
        ("none", "['none']"),
    ],
)
def test_an_unknown_layer_name_stops_the_server_naming_it(
    tmp_path: Path, layers: dict[str, Layer], required: str, unknown: str
) -> None:
    code, log = refused(server(tmp_path, required))

    assert code == 1
    assert refusal(log) == (
        f"TOOLVAULT_REQUIRE_ISOLATION names unknown layers {unknown}; the layers are "
        f"{', '.join(layers)} (or all)"
    )


def test_required_layers_this_host_has_let_the_server_serve_and_the_gauge_shows_each_layer(
    tmp_path: Path, layers: dict[str, Layer]
) -> None:
    if not all(layers[name].active for name in ACTIVE_HERE):
        pytest.skip(f"this host lacks one of {ACTIVE_HERE}")
    running = server(tmp_path, ",".join(ACTIVE_HERE), TOOLVAULT_METRICS_PORT="0")
    running.start()
    try:
        log = "".join(running.log)
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
        assert port is not None, log
        with Client(running.address, retries=False) as client:
            client.publish("add", "def main(a, b):\n    return a + b\n")
            assert client.invoke("add", {"a": 2, "b": 3}).result == 5
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        assert running.stop() == 0
    lines = text.splitlines()
    assert 'toolvault_sandbox_layer_active{layer="seccomp"} 1.0' in lines
    assert 'toolvault_sandbox_layer_active{layer="private-root"} 1.0' in lines
    if not layers["cgroup-memory"].active:
        assert 'toolvault_sandbox_layer_active{layer="cgroup-memory"} 0.0' in lines
    # One sample per layer doctor prints, and each says what doctor says.
    gauge = dict(
        re.findall(r'^toolvault_sandbox_layer_active\{layer="([^"]+)"\} (\S+)$', text, re.M)
    )
    assert gauge == {name: "1.0" if layer.active else "0.0" for name, layer in layers.items()}
