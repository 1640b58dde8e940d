"""What the agent loop needs from the outside world."""

from __future__ import annotations

from typing import Any, Protocol

from kron.agent_core.types import ModelRequest, ModelResponse, ToolCall, ToolResult


class LLM(Protocol):
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one Messages API call. Raises `ModelCallError` on failure."""
        ...


class ToolProvider(Protocol):
    """A user's tools. Synchronous: the Composio SDK is; async callers use a thread."""

    def list_tools(self, user_id: str, toolkits: list[str]) -> list[dict[str, Any]]:
        """Anthropic tool definitions ({name, description, input_schema}) for these toolkits."""
        ...

    def execute(self, user_id: str, call: ToolCall) -> ToolResult:
        """Run one tool call for this user.

        A tool that fails returns `ToolResult(is_error=True)`; a transient backend failure raises
        `ToolTransportError`.
        """
        ...

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        """Whether the user has an active connection for this toolkit."""
        ...

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        """A URL where the user can connect this toolkit."""
        ...
