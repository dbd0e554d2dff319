"""Assembles the server: database, services, gRPC servicers, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import make_url

from toolvault import sandbox
from toolvault.server.config import MiB, Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.access import KEY
from toolvault.server.rpc.agents import AgentServicer
from toolvault.server.rpc.audit import AuditServicer
from toolvault.server.rpc.functions import FunctionServicer
from toolvault.server.rpc.history import HistoryServicer
from toolvault.server.rpc.interceptors import ReadinessGate, interceptors
from toolvault.server.rpc.invocations import InvocationServicer
from toolvault.server.rpc.keys import KeyServicer
from toolvault.server.rpc.secrets import SecretServicer
from toolvault.server.services.agents import Agents
from toolvault.server.services.audit import AuditLog
from toolvault.server.services.functions import FunctionStore
from toolvault.server.services.history import History
from toolvault.server.services.invocations import Invocations
from toolvault.server.services.keys import Keys
from toolvault.server.services.plugins import Plugins
from toolvault.server.services.secrets import Secrets
from toolvault.server.services.stats import FunctionStatistics
from toolvault.server.telemetry import metrics, tracing
from toolvault.v1 import (
    access_pb2,
    access_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    function_pb2,
    function_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    invocation_pb2,
    invocation_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
)

log = logging.getLogger("toolvault.server")

SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (function_pb2, "FunctionService"),
        (invocation_pb2, "InvocationService"),
        (history_pb2, "HistoryService"),
        (agent_pb2, "AgentService"),
        (access_pb2, "KeyService"),
        (access_pb2, "AuditService"),
        (secret_pb2, "SecretService"),
    )
)


class StartupError(Exception):
    """The server cannot start as configured: address, TLS files, admin key or sandbox."""


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    assert settings.tls_cert is not None and settings.tls_key is not None
    try:
        chain = settings.tls_cert.read_bytes()
        key = settings.tls_key.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as e:
        raise StartupError(f"cannot read a TLS file: {e}") from e
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _check_isolation(layers: Sequence[sandbox.Layer], required: Sequence[str]) -> None:
    """Refuse to start when a sandbox layer the operator requires is not in effect."""
    found = {layer.name: layer for layer in layers}
    # Checked before "all" widens the list: a misspelt name beside it is still a mistake.
    unknown = [name for name in required if name != "all" and name not in found]
    if unknown:
        raise StartupError(
            f"TOOLVAULT_REQUIRE_ISOLATION names unknown layers {unknown}; the layers are "
            f"{', '.join(found)} (or all)"
        )
    # A layer listed twice is named once.
    wanted = list(found) if "all" in required else list(dict.fromkeys(required))
    missing = [f"{name} ({found[name].detail})" for name in wanted if not found[name].active]
    if missing:
        raise StartupError(
            "refusing to start: sandbox layers required by TOOLVAULT_REQUIRE_ISOLATION are "
            f"not in effect on this host: {'; '.join(missing)}"
        )


def _in_use(listen: str) -> bool:
    """Whether binding ``listen`` (HOST:PORT) fails because something holds the port."""
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return False
    for family, kind, _, _, address in infos:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
    return False


def _transport(settings: Settings) -> str:
    if settings.tls_cert is None:
        return "plaintext"
    return "mutual TLS" if settings.tls_client_ca else "TLS"


def _bootstrap_admin_key(keys: Keys, settings: Settings) -> None:
    given = settings.admin_key.get_secret_value() if settings.admin_key else None
    if given is not None and KEY.fullmatch(given) is None:
        raise StartupError(
            "TOOLVAULT_ADMIN_KEY is not a toolvault key: expected tvk_<12 hex digits>_<43 "
            "characters of A-Z, a-z, 0-9, _ and ->; `toolvault keys generate` makes one"
        )
    created = keys.bootstrap(given)
    if created is not None:
        # The only time this key is ever shown: the server keeps only its hash.
        log.warning("bootstrap admin key (shown once, store it now): %s", created)
    elif given is not None:
        log.info("admin key from TOOLVAULT_ADMIN_KEY in place (used only on first start)")


async def serve(settings: Settings) -> None:
    """Run the server until SIGTERM or SIGINT, then drain in-flight calls and return.

    The port opens first with every RPC but health and reflection refused (health says
    NOT_SERVING); once the database is migrated and the sandbox host started (and
    probed), health turns SERVING. On a signal, health turns NOT_SERVING, then in-flight
    calls get the grace period to finish, and the sandbox host stops.
    """
    # Before the port opens: a plugin that fails to load stops the start-up.
    plugins = Plugins()
    plugins.load(settings.plugins)
    log.info("plugins loaded: %s", ", ".join(plugins.names) or "none")
    tracer_provider = tracing.tracer_provider(settings)
    tracer = tracer_provider.get_tracer(tracing.TRACER_NAME)
    if endpoint := tracing.otlp_endpoint(settings):
        log.info("traces exported over OTLP to %s", endpoint)

    gate = ReadinessGate()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    keys = Keys(db)
    # An Invoke reply carries stdout, stderr and the result, each up to the output cap,
    # and the output files; a request the arguments or the source, and the input files.
    files = settings.max_files_bytes + settings.max_files * 1024
    max_reply = 3 * settings.max_max_output_bytes + files + MiB
    server = grpc.aio.server(
        interceptors=interceptors(settings, keys, tracer, gate),
        options=[
            (
                "grpc.max_receive_message_length",
                settings.max_source_bytes + settings.max_args_bytes + files + MiB,
            ),
            ("grpc.max_send_message_length", max_reply),
            ("grpc.so_reuseport", 0),
        ],
    )
    health_service = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    services = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    for name in SERVICES:
        await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_service.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    functions = FunctionStore(db, settings, plugins=plugins)
    secrets = Secrets(db, settings.secrets_keys())
    if not settings.secrets_key:
        log.info("no TOOLVAULT_SECRETS_KEY: secrets cannot be set, nor used by calls")
    invocations = Invocations(
        db, functions, settings, plugins=plugins, secrets=secrets, tracer=tracer
    )
    agents = Agents(db, functions, invocations, settings, plugins=plugins)
    function_pb2_grpc.add_FunctionServiceServicer_to_server(
        FunctionServicer(functions, FunctionStatistics(db), invocations), server
    )
    invocation_pb2_grpc.add_InvocationServiceServicer_to_server(
        InvocationServicer(invocations), server
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(agents, settings.default_max_chain_depth), server
    )
    history = History(db, file_retention_s=settings.file_retention_s)
    history_pb2_grpc.add_HistoryServiceServicer_to_server(HistoryServicer(history), server)
    access_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(keys), server)
    access_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(AuditLog(db)), server)
    secret_pb2_grpc.add_SecretServiceServicer_to_server(SecretServicer(secrets), server)
    reflection.enable_server_reflection([*SERVICES, *services, reflection.SERVICE_NAME], server)

    # Before the address is announced, so that a SIGTERM right after it drains cleanly.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        if settings.tls_cert is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, _tls_credentials(settings))
    except RuntimeError as e:
        # gRPC's own text points at its debug log; the usual cause is worth naming.
        why = "the port is in use" if _in_use(settings.listen) else str(e)
        raise StartupError(
            f"cannot listen on {settings.listen}: {why}; choose another address with "
            "--listen (TOOLVAULT_LISTEN), and point clients at it with --server"
        ) from e
    await server.start()
    try:
        await asyncio.to_thread(db.upgrade)
        if settings.auth == "required":
            await asyncio.to_thread(_bootstrap_admin_key, keys, settings)
        # Before the first call: the sandbox host starts warm, and its probe sandbox says
        # which layers are in effect (the sandbox logs a WARNING for each one that is not).
        layers = await invocations.start_sandbox()
        _check_isolation(layers, settings.require_isolation)
    except BaseException:
        await invocations.close()
        await server.stop(None)
        raise
    log.info("sandbox layers active: %s", ", ".join(x.name for x in layers if x.active) or "none")
    for layer in layers:
        metrics.SANDBOX_LAYERS.labels(layer.name).set(layer.active)
    if settings.metrics_port is not None:
        metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, metrics_port)
    gate.is_open = True
    for name in ("", *SERVICES):
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = settings.listen.rpartition(":")[0]
    log.info(
        "toolvault listening on %s:%d (%s, auth %s, database %s, %d sandboxes in parallel)",
        host,
        port,
        _transport(settings),
        settings.auth,
        make_url(settings.database_url).render_as_string(hide_password=True),
        settings.max_concurrent_runs,
    )
    await stopping.wait()
    log.info("shutting down: finishing in-flight calls for up to %.1f s", settings.shutdown_grace_s)
    await health_service.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    await invocations.close()
    db.dispose()
    tracing.shutdown(tracer_provider)
    log.info("stopped")
