"""The Dockerfile is correct by construction (no Docker engine runs here to build it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_base_image_is_pinned_to_an_exact_python_release() -> None:
    image = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE)
    assert image is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image.group(1))
    assert all(base.startswith("${PYTHON_IMAGE}") for base in instructions("FROM"))


def test_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    assert instructions("USER") == ["10001"]
    assert "useradd --system --uid 10001" in DOCKERFILE
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.endswith(
        'CMD ["toolvault", "--server", "127.0.0.1:50051", "health", "--timeout", "4"]'
    )


def test_copies_only_paths_that_exist() -> None:
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_listens_beyond_loopback_inside_the_container() -> None:
    assert "TOOLVAULT_LISTEN=0.0.0.0:50051" in DOCKERFILE
    assert instructions("ENTRYPOINT") == ['["toolvault"]']


def test_hadolint_finds_nothing_to_fix() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
