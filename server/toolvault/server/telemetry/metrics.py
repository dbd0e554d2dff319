"""Prometheus metrics, served on their own HTTP port when ``metrics_port`` is set.

The metrics live in this module's registry (not prometheus_client's global one), so only
toolvault's own series are exported.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
_RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

INVOCATIONS = Counter(
    "toolvault_invocations",
    "Function runs, by function and outcome status.",
    ["function", "status"],
    registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "toolvault_run_duration_seconds",
    "Wall-clock time of function runs in the sandbox.",
    ["function"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "toolvault_rpc_duration_seconds",
    "Time to answer each RPC, by method and status code.",
    ["method", "code"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "toolvault_rejections",
    "Calls refused before running, by reason.",
    ["reason"],
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "toolvault_cache_lookups",
    "Result-cache lookups of deterministic functions, by result (hit or miss).",
    ["result"],
    registry=REGISTRY,
)
DB_ERRORS = Counter(
    "toolvault_db_errors", "Database errors that failed a request.", registry=REGISTRY
)
IN_FLIGHT = Gauge(
    "toolvault_sandboxes_in_flight", "Sandboxes running a function now.", registry=REGISTRY
)
QUEUED = Gauge("toolvault_queued_calls", "Calls waiting for a free sandbox.", registry=REGISTRY)
SANDBOX_LAYERS = Gauge(
    "toolvault_sandbox_layer_active",
    "1 for each sandbox layer a probe sandbox found in effect, 0 for one it did not.",
    ["layer"],
    registry=REGISTRY,
)
EGRESS_REQUESTS = Counter(
    "toolvault_egress_requests",
    "Connections runs asked their door to the network for, by function and outcome "
    "(ok, refused by the door, failed by the host or the network).",
    ["function", "outcome"],
    registry=REGISTRY,
)
EGRESS_BYTES = Counter(
    "toolvault_egress_bytes",
    "Bytes carried through the doors to the network, by function and direction.",
    ["function", "direction"],
    registry=REGISTRY,
)
PLUGIN_ERRORS = Counter(
    "toolvault_plugin_errors",
    "Plugin hook implementations that raised, by plugin and hook.",
    ["plugin", "hook"],
    registry=REGISTRY,
)


def serve(host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` in a background thread; returns the port."""
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)
