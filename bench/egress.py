"""What an egress request costs: through a call's door, against a direct one, same run.

Run ``python bench/egress.py`` (``--quick`` for a short run); it writes ``bench/EGRESS.md``.
One loopback HTTP server, a process of its own, answers every request. Per request, in
blocks that alternate so that drift on a shared machine hits both alike:

- ``direct``: ``urllib.request.urlopen`` from this process, straight to the server;
- ``door``: the same call of ``urlopen`` made by a function in a warm worker, through
  its door (the server's side of which runs in this process's event loop, as in the
  server). A call makes ``N`` requests; its cost per request is its duration less that
  of the same function making none, measured in the same block, over ``N``.

The door's share is everything on the way: the sandbox's request frame, the door's
checks, the name it resolves (an IP address here, so no DNS), the connection it makes,
the socket pair it hands over and the bytes it relays both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from toolvault.sandbox import (
    EGRESS_IMPORTS,
    EGRESS_PRELOAD,
    Egress,
    Job,
    Limits,
    SandboxHost,
    parse_rules,
)

ROOT = Path(__file__).resolve().parent
FETCH = """\
import urllib.request
def main(url, n):
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
    return n
"""
LIMITS = Limits(timeout_ms=60_000, memory_mb=256, max_output_bytes=1 << 20)


SERVER = """\
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""


def direct(url: str, n: int) -> float:
    """ms per request from this process, over ``n`` requests."""
    started = time.perf_counter()
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
    return (time.perf_counter() - started) * 1000 / n


async def measure(blocks: int, per_call: int) -> dict[str, list[float]]:
    # In a process of its own: in this one it would compete with the door for the GIL.
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    url = f"http://127.0.0.1:{port}/"
    egress = Egress(
        rules=parse_rules([f"127.0.0.1:{port}"]),
        private=(ipaddress.ip_network("127.0.0.1/32"),),
        max_requests=per_call,
        request_timeout_ms=60_000,
    )
    host = SandboxHost(preload=EGRESS_PRELOAD)
    await host.start()

    async def call(n: int) -> float:
        job = Job(FETCH, "main", json.dumps({"url": url, "n": n}), EGRESS_IMPORTS, LIMITS)
        result = await host.run(job, worker_key="fetch", egress=egress)
        assert result.status.name == "OK", (result.error_type, result.error_message)
        assert len(result.egress) == n and all(r.status == 200 for r in result.egress)
        return result.duration_ms

    times: dict[str, list[float]] = {"direct": [], "door": []}
    try:
        await call(per_call)  # the worker starts, and every module warms up
        direct(url, per_call)
        for _ in range(blocks):
            times["direct"].append(direct(url, per_call))
            empty, full = await call(0), await call(per_call)
            times["door"].append((full - empty) / per_call)
    finally:
        await host.close()
        server.kill()
        server.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    blocks, per_call = (5, 10) if args.quick else (30, 16)
    times = asyncio.run(measure(blocks, per_call))
    direct_ms = statistics.median(times["direct"])
    door_ms = statistics.median(times["door"])
    lines = [
        "# Egress: one request through a call's door against a direct one",
        "",
        f"`python bench/egress.py{' --quick' if args.quick else ''}` on {platform.node()}, "
        f"Python {platform.python_version()}, {blocks} blocks of {per_call} requests each "
        "way; medians of the blocks' per-request figures.",
        "",
        "| path | ms per request | ratio |",
        "| --- | --- | --- |",
        f"| direct (`urlopen` in this process) | {direct_ms:.3f} | 1.00 |",
        f"| through the door (`urlopen` in a warm worker) | {door_ms:.3f} | "
        f"{door_ms / direct_ms:.2f} |",
        "",
        f"The door adds {door_ms - direct_ms:.3f} ms to a request to a loopback server.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (ROOT / "EGRESS.md").write_text(text)


if __name__ == "__main__":
    main()
