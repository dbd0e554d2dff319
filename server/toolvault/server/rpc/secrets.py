"""SecretService: set, list and delete the secrets of namespaces; never read them."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import actor, principal
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.secrets import Secrets
from toolvault.v1 import secret_pb2, secret_pb2_grpc


class SecretServicer(secret_pb2_grpc.SecretServiceServicer):
    """SecretService over :class:`Secrets`."""

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets

    @rpc_method
    async def SetSecret(
        self,
        request: secret_pb2.SetSecretRequest,
        context: grpc.aio.ServicerContext[
            secret_pb2.SetSecretRequest, secret_pb2.SetSecretResponse
        ],
    ) -> secret_pb2.SetSecretResponse:
        """See the .proto."""
        info, created = await asyncio.to_thread(
            self._secrets.set, request.name, request.value, actor=actor(context)
        )
        return secret_pb2.SetSecretResponse(secret=convert.secret_pb(info), created=created)

    @rpc_method
    async def ListSecrets(
        self,
        request: secret_pb2.ListSecretsRequest,
        context: grpc.aio.ServicerContext[
            secret_pb2.ListSecretsRequest, secret_pb2.ListSecretsResponse
        ],
    ) -> secret_pb2.ListSecretsResponse:
        """See the .proto."""
        infos, token = await asyncio.to_thread(
            self._secrets.secrets,
            scope=principal().scope,
            namespace=request.namespace,
            size=request.page_size,
            token=request.page_token,
        )
        return secret_pb2.ListSecretsResponse(
            secrets=[convert.secret_pb(i) for i in infos], next_page_token=token
        )

    @rpc_method
    async def DeleteSecret(
        self,
        request: secret_pb2.DeleteSecretRequest,
        context: grpc.aio.ServicerContext[
            secret_pb2.DeleteSecretRequest, secret_pb2.DeleteSecretResponse
        ],
    ) -> secret_pb2.DeleteSecretResponse:
        """See the .proto."""
        await asyncio.to_thread(self._secrets.delete, request.name, actor=actor(context))
        return secret_pb2.DeleteSecretResponse()
