"""Throughput of one replica against two, on one PostgreSQL database and the same load.

Run ``python bench/replicas.py`` (``--quick`` for a short run) with PostgreSQL at
``TOOLVAULT_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``, used only to
create and drop a database of its own). It starts two ``toolvault serve`` processes on that
database, then drives the same load (concurrent SDK clients invoking a function) at one of
them, then at both through gRPC's round_robin, alternating the two setups over several
rounds because this machine is noisy; it writes ``bench/REPLICAS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from run import NOOP, ROOT, SPIN, TOOLVAULT, machine

from toolvault.client import Client

ADMIN_URL = os.environ.get("TOOLVAULT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
LISTENING = re.compile(r"listening on (\S+:\d+)")
CLIENTS = 16
# Each call of "spin" loops this many times: some milliseconds of sandbox CPU.
SPIN_N = 200_000


def start_server(db: str, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """A ``toolvault serve`` on ``db`` and a free loopback port, and its address."""
    process = subprocess.Popen(
        [TOOLVAULT, "serve", "--listen", "127.0.0.1:0", "--db", db, "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TOOLVAULT_MAX_QUEUED_RUNS": "10000"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if match := LISTENING.search(line):
            # Keep reading, or a full pipe would stall the server's logging.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, match.group(1)
    raise SystemExit("the server did not start")


def throughput(target: str, ref: str, args: dict[str, int], seconds: float) -> tuple[float, int]:
    """Invocations per second from ``CLIENTS`` concurrent SDK clients, and how many ran."""
    deadline = time.monotonic() + seconds
    done = [0] * CLIENTS

    def caller(index: int) -> None:
        with Client(target, timeout=60) as client:
            while time.monotonic() < deadline:
                assert client.invoke(ref, args).ok
                done[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(caller, range(CLIENTS)))
    return sum(done) / (time.monotonic() - started), sum(done)


def main() -> None:
    """Measure both setups in alternating rounds and write bench/REPLICAS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    options = parser.parse_args()
    rounds, seconds = (2, 2.0) if options.quick else (3, 5.0)
    name = f"toolvault_bench_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    db = f"{db}/{name}"
    servers: list[subprocess.Popen[str]] = []
    workloads = {"noop": ("noop", {}), f"spin({SPIN_N:,})": ("spin", {"n": SPIN_N})}
    rates: dict[tuple[str, int], list[float]] = {}
    calls = 0
    try:
        with tempfile.TemporaryDirectory() as data:
            addresses = []
            for index in range(2):
                process, address = start_server(db, Path(data) / str(index))
                servers.append(process)
                addresses.append(address)
            targets = {1: addresses[0], 2: "ipv4:" + ",".join(addresses)}
            with Client(targets[2], timeout=60) as client:
                client.publish("noop", NOOP)
                client.publish("spin", SPIN, timeout_ms=60_000)
                for _ in range(20):  # warm both replicas' sandbox hosts and connections
                    client.invoke("noop")
                for label, (ref, args) in workloads.items():
                    for _ in range(rounds):
                        for replicas, target in targets.items():
                            rate, count = throughput(target, ref, args, seconds)
                            rates.setdefault((label, replicas), []).append(rate)
                            calls += count
                recorded = sum(len(client.history(f, limit=None)) for f in ("noop", "spin"))
    finally:
        for process in servers:
            process.terminate()
            process.wait(30)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    calls += 20
    rows = "".join(
        f"| {label} | {statistics.median(rates[label, 1]):.0f} | "
        f"{statistics.median(rates[label, 2]):.0f} | "
        f"{statistics.median(rates[label, 2]) / statistics.median(rates[label, 1]):.2f}x |\n"
        for label in workloads
    )
    report = f"""# Replicas: throughput of one against two

Measured {dt.date.today().isoformat()} with `python bench/replicas.py{" --quick" if options.quick else ""}`
on {machine()}; PostgreSQL {_pg_version()} on the same machine.

Two `toolvault serve` processes share one fresh PostgreSQL database. The same load,
{CLIENTS} concurrent SDK clients (threads in one process, one channel each) invoking a
function for {seconds:.0f} s, goes either to one replica or to both through gRPC's
round_robin (`ipv4:A,B`). The setups alternate over {rounds} rounds; medians of the
rounds, in invocations per second:

| function | 1 replica | 2 replicas | 2 vs 1 |
| --- | --- | --- | --- |
{rows}
The history holds {recorded} rows for the {calls} calls made: {"every call was recorded" if recorded == calls else "MISMATCH"}.

**What this measures, honestly.** This machine has {os.cpu_count()} cores, and they run
everything at once: the clients, both replicas with their sandboxes, and PostgreSQL (in
the one-replica rounds the second server stays up, idle). A second replica
adds no CPU here, so these figures measure contention, not scale-out: whether a second
process gets more out of the same cores (more sandbox slots, a second event loop, its own
GIL) or loses to the extra context switches and database connections. Scale-out needs
replicas on separate machines (or pods with their own CPU), where each replica brings
its own cores and the shared PostgreSQL becomes the limit, since every call writes a
history row.
"""
    (ROOT / "REPLICAS.md").write_text(report)
    print(report)


def _pg_version() -> str:
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


if __name__ == "__main__":
    main()
