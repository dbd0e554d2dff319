"""KeyService: create, list and revoke API keys."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import actor
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.keys import Keys
from toolvault.v1 import access_pb2, access_pb2_grpc


class KeyServicer(access_pb2_grpc.KeyServiceServicer):
    """KeyService over :class:`Keys`."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    @rpc_method
    async def CreateKey(
        self,
        request: access_pb2.CreateKeyRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.CreateKeyRequest, access_pb2.CreateKeyResponse
        ],
    ) -> access_pb2.CreateKeyResponse:
        """See the .proto."""
        secret, info = await asyncio.to_thread(
            self._keys.create,
            convert.role(request.role),
            namespaces=tuple(request.namespaces),
            agent=request.agent,
            description=request.description,
            actor=actor(context),
        )
        return access_pb2.CreateKeyResponse(key=convert.key_pb(info), secret=secret)

    @rpc_method
    async def ListKeys(
        self,
        request: access_pb2.ListKeysRequest,
        context: grpc.aio.ServicerContext[access_pb2.ListKeysRequest, access_pb2.ListKeysResponse],
    ) -> access_pb2.ListKeysResponse:
        """See the .proto."""
        keys, token = await asyncio.to_thread(
            self._keys.keys, size=request.page_size, token=request.page_token
        )
        return access_pb2.ListKeysResponse(
            keys=[convert.key_pb(k) for k in keys], next_page_token=token
        )

    @rpc_method
    async def RevokeKey(
        self,
        request: access_pb2.RevokeKeyRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.RevokeKeyRequest, access_pb2.RevokeKeyResponse
        ],
    ) -> access_pb2.RevokeKeyResponse:
        """See the .proto."""
        info = await asyncio.to_thread(self._keys.revoke, request.prefix, actor=actor(context))
        return access_pb2.RevokeKeyResponse(key=convert.key_pb(info))
