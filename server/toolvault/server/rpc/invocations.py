"""InvocationService: run a function."""

from __future__ import annotations

import grpc

from toolvault.server.domain.executions import CallContext
from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import recorded_caller
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.invocations import Invocations
from toolvault.v1 import invocation_pb2, invocation_pb2_grpc


class InvocationServicer(invocation_pb2_grpc.InvocationServiceServicer):
    """InvocationService over :class:`Invocations`."""

    def __init__(self, invocations: Invocations) -> None:
        self._invocations = invocations

    @rpc_method
    async def Invoke(
        self,
        request: invocation_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[
            invocation_pb2.InvokeRequest, invocation_pb2.InvokeResponse
        ],
    ) -> invocation_pb2.InvokeResponse:
        """See the .proto."""
        execution = await self._invocations.invoke(
            request.ref,
            request.args_json,
            CallContext(caller=recorded_caller(context)),
            idempotency_key=request.idempotency_key,
            files=convert.files(request.files),
        )
        return invocation_pb2.InvokeResponse(
            execution=convert.execution_pb(execution),
            output_files=convert.files_pb(execution.outputs),
        )
