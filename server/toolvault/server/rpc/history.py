"""HistoryService: the recorded runs the caller may see."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.domain.executions import ExecutionFilter
from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import principal
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.history import History
from toolvault.v1 import history_pb2, history_pb2_grpc


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    """HistoryService over :class:`History`."""

    def __init__(self, history: History) -> None:
        self._history = history

    @rpc_method
    async def ListExecutions(
        self,
        request: history_pb2.ListExecutionsRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.ListExecutionsRequest, history_pb2.ListExecutionsResponse
        ],
    ) -> history_pb2.ListExecutionsResponse:
        """See the .proto."""
        where = ExecutionFilter(
            function_name=request.function_name,
            status=convert.status_filter(request.status),
            version=request.version,
            start_from=convert.optional_datetime(request, "start_time_from"),
            start_to=convert.optional_datetime(request, "start_time_to"),
            agent=request.agent,
            conversation_id=request.conversation_id,
        )
        executions, token = await asyncio.to_thread(
            self._history.executions,
            where,
            scope=principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return history_pb2.ListExecutionsResponse(
            executions=[convert.execution_pb(e) for e in executions], next_page_token=token
        )

    @rpc_method
    async def GetExecution(
        self,
        request: history_pb2.GetExecutionRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.GetExecutionRequest, history_pb2.GetExecutionResponse
        ],
    ) -> history_pb2.GetExecutionResponse:
        """See the .proto."""
        execution = await asyncio.to_thread(
            self._history.get, request.id, scope=principal().scope, outputs=request.include_files
        )
        return history_pb2.GetExecutionResponse(
            execution=convert.execution_pb(execution),
            output_files=convert.files_pb(execution.outputs),
        )
