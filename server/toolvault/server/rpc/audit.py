"""AuditService: the changes the caller may see."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.domain.audit import AuditFilter
from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import principal
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.audit import AuditLog
from toolvault.v1 import access_pb2, access_pb2_grpc


class AuditServicer(access_pb2_grpc.AuditServiceServicer):
    """AuditService over :class:`AuditLog`."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    @rpc_method
    async def ListAuditEvents(
        self,
        request: access_pb2.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.ListAuditEventsRequest, access_pb2.ListAuditEventsResponse
        ],
    ) -> access_pb2.ListAuditEventsResponse:
        """See the .proto."""
        where = AuditFilter(
            actor=request.actor,
            action=request.action,
            target=request.target,
            start_from=convert.optional_datetime(request, "start_time_from"),
            start_to=convert.optional_datetime(request, "start_time_to"),
        )
        events, token = await asyncio.to_thread(
            self._log.events,
            where,
            scope=principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return access_pb2.ListAuditEventsResponse(
            events=[convert.audit_event_pb(e) for e in events], next_page_token=token
        )
