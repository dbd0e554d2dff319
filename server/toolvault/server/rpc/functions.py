"""FunctionService: publish, read, alias and delete functions, and their statistics."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.domain.stats import StatsQuery
from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import actor, principal
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.invocations import Invocations
from toolvault.server.services.stats import FunctionStatistics
from toolvault.v1 import function_pb2, function_pb2_grpc


class FunctionServicer(function_pb2_grpc.FunctionServiceServicer):
    """FunctionService over :class:`FunctionStore` and :class:`FunctionStatistics`.

    A deletion also retires the deleted versions' warm workers in ``invocations``.
    """

    def __init__(
        self, functions: FunctionStore, statistics: FunctionStatistics, invocations: Invocations
    ) -> None:
        self._functions = functions
        self._statistics = statistics
        self._invocations = invocations

    @rpc_method
    async def PublishFunction(
        self,
        request: function_pb2.PublishFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.PublishFunctionRequest, function_pb2.PublishFunctionResponse
        ],
    ) -> function_pb2.PublishFunctionResponse:
        """See the .proto."""
        publish = PublishRequest(
            name=request.name,
            source=request.source,
            entrypoint=request.entrypoint,
            description=request.description,
            input_schema=request.input_schema_json,
            output_schema=request.output_schema_json,
            timeout_ms=request.limits.timeout_ms,
            memory_mb=request.limits.memory_mb,
            max_output_bytes=request.limits.max_output_bytes,
            allowed_imports=tuple(request.allowed_imports),
            max_concurrency=request.limits.max_concurrency,
            deterministic=request.deterministic,
            isolation=convert.isolation(request.isolation),
            egress=tuple(request.egress),
            secrets=tuple(request.secrets),
        )
        version, created = await asyncio.to_thread(
            self._functions.publish, publish, actor=actor(context)
        )
        return function_pb2.PublishFunctionResponse(
            version=convert.version_pb(version, with_source=True), created=created
        )

    @rpc_method
    async def GetFunction(
        self,
        request: function_pb2.GetFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.GetFunctionRequest, function_pb2.GetFunctionResponse
        ],
    ) -> function_pb2.GetFunctionResponse:
        """See the .proto."""
        function, version = await asyncio.to_thread(self._functions.get, request.ref)
        return function_pb2.GetFunctionResponse(
            function=convert.function_pb(function),
            version=convert.version_pb(version, with_source=True),
        )

    @rpc_method
    async def ListFunctions(
        self,
        request: function_pb2.ListFunctionsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.ListFunctionsRequest, function_pb2.ListFunctionsResponse
        ],
    ) -> function_pb2.ListFunctionsResponse:
        """See the .proto."""
        functions, token = await asyncio.to_thread(
            self._functions.functions,
            scope=principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return function_pb2.ListFunctionsResponse(
            functions=[convert.function_pb(f) for f in functions], next_page_token=token
        )

    @rpc_method
    async def ListFunctionVersions(
        self,
        request: function_pb2.ListFunctionVersionsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.ListFunctionVersionsRequest, function_pb2.ListFunctionVersionsResponse
        ],
    ) -> function_pb2.ListFunctionVersionsResponse:
        """See the .proto."""
        versions, token = await asyncio.to_thread(
            self._functions.versions, request.name, size=request.page_size, token=request.page_token
        )
        return function_pb2.ListFunctionVersionsResponse(
            versions=[convert.version_pb(v, with_source=False) for v in versions],
            next_page_token=token,
        )

    @rpc_method
    async def SetAlias(
        self,
        request: function_pb2.SetAliasRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.SetAliasRequest, function_pb2.SetAliasResponse
        ],
    ) -> function_pb2.SetAliasResponse:
        """See the .proto."""
        function = await asyncio.to_thread(
            self._functions.set_alias,
            request.name,
            request.alias,
            request.version,
            actor=actor(context),
        )
        return function_pb2.SetAliasResponse(function=convert.function_pb(function))

    @rpc_method
    async def DeleteAlias(
        self,
        request: function_pb2.DeleteAliasRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.DeleteAliasRequest, function_pb2.DeleteAliasResponse
        ],
    ) -> function_pb2.DeleteAliasResponse:
        """See the .proto."""
        await asyncio.to_thread(
            self._functions.delete_alias, request.name, request.alias, actor=actor(context)
        )
        return function_pb2.DeleteAliasResponse()

    @rpc_method
    async def DeleteFunction(
        self,
        request: function_pb2.DeleteFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.DeleteFunctionRequest, function_pb2.DeleteFunctionResponse
        ],
    ) -> function_pb2.DeleteFunctionResponse:
        """See the .proto."""
        caller = actor(context)
        deleted = await asyncio.to_thread(self._functions.delete, request.name, actor=caller)
        self._invocations.retire(deleted)
        return function_pb2.DeleteFunctionResponse(deleted_versions=len(deleted))

    @rpc_method
    async def GetFunctionStats(
        self,
        request: function_pb2.GetFunctionStatsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.GetFunctionStatsRequest, function_pb2.GetFunctionStatsResponse
        ],
    ) -> function_pb2.GetFunctionStatsResponse:
        """See the .proto."""
        query = StatsQuery(
            name=request.name,
            version=request.version,
            start_from=convert.optional_datetime(request, "start_time_from"),
            start_to=convert.optional_datetime(request, "start_time_to"),
            failure_limit=request.failure_limit,
        )
        info = await asyncio.to_thread(self._statistics.stats, query)
        return function_pb2.GetFunctionStatsResponse(stats=convert.stats_pb(info))
