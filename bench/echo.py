"""The floor: a bare gRPC unary echo server, on the same grpcio and loopback as toolvault.

``python bench/echo.py`` serves ``/bench.Echo/Echo`` on grpc.aio (as the toolvault server
does) on a free loopback port, prints the port, and serves until it is killed. bench/run.py
measures toolvault's latency and throughput beside it: no server in Python answers a
unary call faster than this one, which does nothing else.
"""

from __future__ import annotations

import asyncio

import grpc

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve() -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve())
