"""HTTP client for the CLI, the SDK and the agent: one httpx core, errors mapped back to messages."""

from polyfabric.client.errors import ApiError, ClientError, CoordinatorUnreachable
from polyfabric.client.http import AgentClient, ApiClient

__all__ = ["AgentClient", "ApiClient", "ApiError", "ClientError", "CoordinatorUnreachable"]
