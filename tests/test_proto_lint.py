"""The protos pass `buf lint` and `buf format`, and v1 stays compatible with its baseline.

The baseline, proto/toolvault-v1-baseline.binpb, is a buf image of the published v1
contract. `buf breaking` compares the protos with it, so a change that would break a
client built against v1 (a field removed, renumbered or retyped, a message or RPC renamed)
fails here. Refresh it only after a release, from protos that pass this test:
`buf build proto --exclude-source-info -o proto/toolvault-v1-baseline.binpb`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "proto" / "toolvault-v1-baseline.binpb"
# From the buf-bin distribution on PyPI, installed with the dev extra.
BUF = str(Path(sys.executable).parent / "buf")


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_buf_lint_finds_nothing() -> None:
    done = buf("lint", "proto")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_protos_are_formatted_as_buf_formats_them() -> None:
    done = buf("format", "proto", "--diff", "--exit-code")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_v1_has_no_breaking_change_against_its_baseline() -> None:
    done = buf("breaking", "proto", "--against", str(BASELINE))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("original", "changed", "complaint"),
    [
        (
            "  string source = 2;\n",
            "",
            'Previously present field "2" with name "source" on message '
            '"PublishFunctionRequest" was deleted.',
        ),
        (
            "  string source = 2;\n",
            "  string source = 20;\n",
            'Previously present field "2" with name "source" on message '
            '"PublishFunctionRequest" was deleted.',
        ),
        (
            "  string entrypoint = 3;\n  // Default",
            "  bytes entrypoint = 3;\n  // Default",
            'Field "3" with name "entrypoint" on message "PublishFunctionRequest" changed type '
            'from "string" to "bytes".',
        ),
    ],
    ids=["field-removed", "field-renumbered", "field-retyped"],
)
def test_a_breaking_change_is_detected(
    tmp_path: Path, original: str, changed: str, complaint: str
) -> None:
    protos = shutil.copytree(
        ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("*.py*")
    )
    function_proto = protos / "toolvault" / "v1" / "function.proto"
    text = function_proto.read_text()
    assert text.count(original) == 1
    function_proto.write_text(text.replace(original, changed))
    done = buf("breaking", "proto", "--against", str(BASELINE), cwd=tmp_path)
    assert done.returncode == 100, done.stderr
    assert re.fullmatch(
        rf"proto/toolvault/v1/function\.proto:\d+:\d+:{re.escape(complaint)}\n", done.stdout
    ), done.stdout


def test_every_file_names_its_go_package() -> None:
    # Go code generates without `M` flags; the Python modules carry the same options.
    from toolvault.v1 import (
        access_pb2,
        agent_pb2,
        execution_pb2,
        function_pb2,
        history_pb2,
        invocation_pb2,
        secret_pb2,
    )

    modules = [
        access_pb2,
        agent_pb2,
        execution_pb2,
        function_pb2,
        history_pb2,
        invocation_pb2,
        secret_pb2,
    ]
    assert len(modules) == len(list((ROOT / "proto" / "toolvault" / "v1").glob("*.proto")))
    packages = {module.DESCRIPTOR.GetOptions().go_package for module in modules}
    assert packages == {"github.com/toolvault/toolvault/gen/go/toolvault/v1;toolvaultv1"}
