"""A sandbox host without the language layer, driven over stdin and stdout by the tests.

``python -m tests.security.unrestricted_host DATA_DIR`` (run by test_kernel_layer inside a
throw-away PID namespace) starts ``SandboxHost(language_layer=False)``: the code of every
job runs as plain Python with the real builtins, ``os`` and ``ctypes`` in reach, under
every other layer exactly as the server's sandboxes run. Each line on stdin is a JSON
list of jobs to run at once; each line on stdout is the list of their results.
``--without-seccomp`` after DATA_DIR leaves the system-call filter out, as on a machine
it has no program for, to attack the other layers alone. ``--warm`` runs every job in a
warm worker, keyed by its filename, as the server runs the calls of a function version;
``--spares`` keeps two spares ready for the jobs (``SandboxHost(spares=2)``) and waits for
them before each line. A job with ``egress`` (a list of allow-list entries) gets a door
to the network that allows them, and loopback as the operator's private-address setting
would (the tests' listeners are all on loopback). A job's ``files`` (name to base64) are
its files in; a result's ``files`` are what it left in out/, the same way.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import sys
from typing import Any

from toolvault.sandbox import Egress, File, Job, Limits, RunResult, SandboxHost, parse_rules

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _job(fields: dict[str, Any]) -> Job:
    limits = Limits(
        **{
            "timeout_ms": 10_000,
            "memory_mb": 256,
            "max_output_bytes": 1 << 20,
            **fields.get("limits", {}),
        }
    )
    return Job(
        fields["source"],
        "main",
        json.dumps(fields.get("args", {})),
        tuple(fields.get("allowed_imports", ())),
        limits,
        filename=fields.get("filename", "attack@1"),
        secrets=fields.get("secrets", {}),
        files=tuple(
            File(name, base64.b64decode(content))
            for name, content in fields.get("files", {}).items()
        ),
    )


def _egress(fields: dict[str, Any]) -> Egress | None:
    if "egress" not in fields:
        return None
    return Egress(rules=parse_rules(fields["egress"]), private=_LOOPBACK)


def _encode(result: RunResult) -> dict[str, Any]:
    files = {file.name: base64.b64encode(file.content).decode() for file in result.files}
    return {**dataclasses.asdict(result), "status": result.status.value, "files": files}


async def _serve(data_dir: str, warm: bool, spares: int) -> None:
    host = SandboxHost(preload=(), hidden_paths=[data_dir], language_layer=False, spares=spares)
    loop = asyncio.get_running_loop()
    try:
        isolation = await host.start()
        layers = {layer.name: layer.active for layer in isolation.layers}
        print(json.dumps({"layers": layers, "host_pid": host.pid}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            requested = json.loads(line)
            jobs = [_job(fields) for fields in requested]
            # Every spare ready (but before the first line): each job of the kind last
            # called runs in one.
            deadline = loop.time() + 2
            while host.spares < spares and loop.time() < deadline:
                await asyncio.sleep(0.005)
            results = await asyncio.gather(
                *(
                    host.run(job, worker_key=job.filename if warm else None, egress=_egress(fields))
                    for job, fields in zip(jobs, requested, strict=True)
                )
            )
            print(json.dumps([_encode(result) for result in results]), flush=True)
    finally:
        await host.close()


if __name__ == "__main__":
    if "--without-seccomp" in sys.argv[2:]:
        # As on a machine the filter has no program for: every other layer alone.
        from toolvault.sandbox import _seccomp

        _seccomp.program = lambda: None  # type: ignore[assignment]
    asyncio.run(
        _serve(sys.argv[1], "--warm" in sys.argv[2:], 2 if "--spares" in sys.argv[2:] else 0)
    )
