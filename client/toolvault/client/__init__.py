"""The toolvault Python SDK: publish, invoke and inspect functions; define agents that use them.

    from pathlib import Path

    from toolvault.client import Client

    with Client("127.0.0.1:50051") as client:
        client.publish("add", Path("add.py").read_text())
        print(client.invoke("add", {"a": 1, "b": 2}).result)

Everything public is re-exported here; the modules starting with "_" are private.
"""

from toolvault.client._access_models import ApiKey, AuditEvent, Role, Secret, generate_key
from toolvault.client._agent_models import (
    Agent,
    AgentSpec,
    ChainContext,
    RoutedTask,
    RoutingStrategy,
    ToolResult,
    ToolSpec,
)
from toolvault.client._client import (
    DEFAULT_MAX_ARGS_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_FILES_BYTES,
    DEFAULT_MAX_SOURCE_BYTES,
    DEFAULT_TARGET,
    TLS,
    Client,
    check_health,
)
from toolvault.client._models import (
    EgressRequest,
    Execution,
    ExecutionError,
    ExecutionFile,
    ExecutionStatus,
    Function,
    FunctionFailure,
    FunctionStats,
    FunctionVersion,
    Isolation,
    Limits,
)
from toolvault.client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ToolvaultError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DEFAULT_MAX_ARGS_BYTES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_FILES_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_SOURCE_BYTES",
    "DEFAULT_TARGET",
    "TLS",
    "Agent",
    "AgentSpec",
    "AlreadyExists",
    "ApiKey",
    "AuditEvent",
    "Cancelled",
    "ChainContext",
    "Client",
    "DeadlineExceeded",
    "EgressRequest",
    "Execution",
    "ExecutionError",
    "ExecutionFile",
    "ExecutionStatus",
    "FailedPrecondition",
    "Function",
    "FunctionFailure",
    "FunctionStats",
    "FunctionVersion",
    "Internal",
    "InvalidArgument",
    "Isolation",
    "Limits",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Role",
    "RoutedTask",
    "RoutingStrategy",
    "Secret",
    "ToolResult",
    "ToolSpec",
    "ToolvaultError",
    "Unauthenticated",
    "Unavailable",
    "check_health",
    "generate_key",
]
