"""AgentService: define agents, list and call their tools, route tasks."""

from __future__ import annotations

import asyncio

import grpc

from toolvault.server.rpc import convert
from toolvault.server.rpc.auth import actor, principal, recorded_caller
from toolvault.server.rpc.status import rpc_method
from toolvault.server.services.agents import Agents
from toolvault.v1 import agent_pb2, agent_pb2_grpc


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """AgentService over :class:`Agents`."""

    def __init__(self, agents: Agents, default_depth: int) -> None:
        self._agents = agents
        self._default_depth = default_depth

    @rpc_method
    async def CreateAgent(
        self,
        request: agent_pb2.CreateAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.CreateAgentRequest, agent_pb2.CreateAgentResponse
        ],
    ) -> agent_pb2.CreateAgentResponse:
        """See the .proto."""
        info = await asyncio.to_thread(
            self._agents.create, convert.definition(request.spec), actor=actor(context)
        )
        return agent_pb2.CreateAgentResponse(agent=convert.agent_pb(info, self._default_depth))

    @rpc_method
    async def UpdateAgent(
        self,
        request: agent_pb2.UpdateAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.UpdateAgentRequest, agent_pb2.UpdateAgentResponse
        ],
    ) -> agent_pb2.UpdateAgentResponse:
        """See the .proto."""
        info, changed = await asyncio.to_thread(
            self._agents.update,
            convert.definition(request.spec),
            allow_missing=request.allow_missing,
            actor=actor(context),
        )
        return agent_pb2.UpdateAgentResponse(
            agent=convert.agent_pb(info, self._default_depth), changed=changed
        )

    @rpc_method
    async def GetAgent(
        self,
        request: agent_pb2.GetAgentRequest,
        context: grpc.aio.ServicerContext[agent_pb2.GetAgentRequest, agent_pb2.GetAgentResponse],
    ) -> agent_pb2.GetAgentResponse:
        """See the .proto."""
        info = await asyncio.to_thread(self._agents.get, request.name, request.revision)
        return agent_pb2.GetAgentResponse(agent=convert.agent_pb(info, self._default_depth))

    @rpc_method
    async def ListAgents(
        self,
        request: agent_pb2.ListAgentsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentsRequest, agent_pb2.ListAgentsResponse
        ],
    ) -> agent_pb2.ListAgentsResponse:
        """See the .proto."""
        infos, token = await asyncio.to_thread(
            self._agents.agents,
            capability=request.capability,
            scope=principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return agent_pb2.ListAgentsResponse(
            agents=[convert.agent_pb(i, self._default_depth) for i in infos], next_page_token=token
        )

    @rpc_method
    async def ListAgentRevisions(
        self,
        request: agent_pb2.ListAgentRevisionsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentRevisionsRequest, agent_pb2.ListAgentRevisionsResponse
        ],
    ) -> agent_pb2.ListAgentRevisionsResponse:
        """See the .proto."""
        infos, token = await asyncio.to_thread(
            self._agents.revisions, request.name, size=request.page_size, token=request.page_token
        )
        return agent_pb2.ListAgentRevisionsResponse(
            agents=[convert.agent_pb(i, self._default_depth) for i in infos], next_page_token=token
        )

    @rpc_method
    async def DeleteAgent(
        self,
        request: agent_pb2.DeleteAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.DeleteAgentRequest, agent_pb2.DeleteAgentResponse
        ],
    ) -> agent_pb2.DeleteAgentResponse:
        """See the .proto."""
        count = await asyncio.to_thread(self._agents.delete, request.name, actor=actor(context))
        return agent_pb2.DeleteAgentResponse(deleted_revisions=count)

    @rpc_method
    async def ListAgentTools(
        self,
        request: agent_pb2.ListAgentToolsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentToolsRequest, agent_pb2.ListAgentToolsResponse
        ],
    ) -> agent_pb2.ListAgentToolsResponse:
        """See the .proto."""
        tools = await asyncio.to_thread(self._agents.tools, request.agent)
        return agent_pb2.ListAgentToolsResponse(tools=[convert.tool_pb(t) for t in tools])

    @rpc_method
    async def CallTool(
        self,
        request: agent_pb2.CallToolRequest,
        context: grpc.aio.ServicerContext[agent_pb2.CallToolRequest, agent_pb2.CallToolResponse],
    ) -> agent_pb2.CallToolResponse:
        """See the .proto."""
        result = await self._agents.call_tool(
            request.agent,
            request.tool,
            request.arguments_json,
            conversation_id=request.conversation_id,
            chain=convert.chain(request.chain),
            caller=recorded_caller(context),
            files=convert.files(request.files),
        )
        return agent_pb2.CallToolResponse(
            execution=convert.execution_pb(result.execution),
            is_error=result.is_error,
            text=result.text,
            output_files=convert.files_pb(result.execution.outputs),
        )

    @rpc_method
    async def RouteTask(
        self,
        request: agent_pb2.RouteTaskRequest,
        context: grpc.aio.ServicerContext[agent_pb2.RouteTaskRequest, agent_pb2.RouteTaskResponse],
    ) -> agent_pb2.RouteTaskResponse:
        """See the .proto."""
        strategy = convert.strategy(request.strategy)
        info, chain = await asyncio.to_thread(
            self._agents.route,
            request.capability,
            request.input_json,
            strategy=strategy,
            named=request.agent,
            calling_agent=request.calling_agent,
            chain=convert.chain(request.chain),
            scope=principal().scope,
        )
        return agent_pb2.RouteTaskResponse(
            agent=convert.agent_pb(info, self._default_depth),
            chain=agent_pb2.ChainContext(depth=chain.depth, root_agent=chain.root_agent),
        )
