"""Assembles the server: database, domain services, gRPC servicers, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from sqlalchemy.engine import make_url

from toolvault.server.api import FunctionServicer, HistoryServicer, InvocationServicer
from toolvault.server.config import MiB, Settings
from toolvault.server.db import Database
from toolvault.server.functions import FunctionStore
from toolvault.server.invocations import History, Invocations
from toolvault.v1 import function_pb2_grpc, history_pb2_grpc, invocation_pb2_grpc

log = logging.getLogger("toolvault.server")


class ListenError(Exception):
    """The server could not bind its listening address."""


async def serve(settings: Settings) -> None:
    """Run the server until SIGTERM or SIGINT, then drain in-flight calls and return."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    await asyncio.to_thread(db.upgrade)
    functions = FunctionStore(db, settings)
    # An Invoke reply carries stdout, stderr and the result, each up to the output cap.
    max_reply = 3 * settings.max_max_output_bytes + MiB
    server = grpc.aio.server(
        options=[
            (
                "grpc.max_receive_message_length",
                settings.max_source_bytes + settings.max_args_bytes + MiB,
            ),
            ("grpc.max_send_message_length", max_reply),
            ("grpc.so_reuseport", 0),
        ]
    )
    function_pb2_grpc.add_FunctionServiceServicer_to_server(FunctionServicer(functions), server)
    invocation_pb2_grpc.add_InvocationServiceServicer_to_server(
        InvocationServicer(Invocations(db, functions, settings)), server
    )
    history_pb2_grpc.add_HistoryServiceServicer_to_server(HistoryServicer(History(db)), server)
    # Before the address is announced, so that a SIGTERM right after it drains cleanly.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        port = server.add_insecure_port(settings.listen)
    except RuntimeError as e:
        raise ListenError(f"cannot listen on {settings.listen}: {e}") from e
    await server.start()
    host = settings.listen.rpartition(":")[0]
    log.info(
        "toolvault listening on %s:%d (database %s, %d sandboxes in parallel)",
        host,
        port,
        make_url(settings.database_url).render_as_string(hide_password=True),
        settings.max_concurrent_runs,
    )
    await stopping.wait()
    log.info("shutting down: finishing in-flight calls for up to %.1f s", settings.shutdown_grace_s)
    await server.stop(settings.shutdown_grace_s)
    db.dispose()
    log.info("stopped")
