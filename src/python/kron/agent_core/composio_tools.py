"""`ToolProvider` backed by Composio: each user's Gmail/GitHub/Slack/... tools, via the composio SDK.

Written against composio 0.29 (0.30 needs a certifi the index lacks) and composio-anthropic. This is
the only module that imports composio: the import takes seconds, so keep it off start-up paths.

The SDK is synchronous (httpx). Call this from a sync Temporal activity or `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
from anthropic.types import ToolUseBlock
from composio import Composio
from composio.core.models.base import allow_tracking
from composio.exceptions import (
    ComposioMultipleConnectedAccountsError,
    InvalidParams,
    ToolNotFoundError,
)
from composio.sdk import SDKConfig
from composio_anthropic import AnthropicProvider
from composio_client import APIConnectionError, APIStatusError

from kron.agent_core.types import ToolCall, ToolResult, ToolTransportError

logger = logging.getLogger(__name__)

# Statuses worth retrying besides 5xx. Other 4xx mean the request itself is wrong.
_TRANSIENT_STATUSES = frozenset({408, 429})
_REDACTED = "[redacted]"


class ComposioRequestError(Exception):
    """Composio refused a request outside tool execution (a 4xx: bad key, unknown toolkit, ...).

    Retrying will not help. (During `execute` the same refusal becomes an error `ToolResult`.)
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class ComposioToolProvider:
    """A user's Composio tools, as Anthropic tool definitions, and their execution.

    One SDK client serves every user and thread: all calls are scoped by `user_id` argument.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 2,
        tools_cache_seconds: float = 60.0,
        tools_limit: int = 200,
        max_result_chars: int = 20_000,
    ) -> None:
        """`timeout` is per HTTP request. `max_retries` applies to reads only: the SDK never
        retries an execution (a retry after a read timeout could send an email twice)."""
        self._api_key = api_key
        self._tools_cache_seconds = tools_cache_seconds
        self._tools_limit = tools_limit
        self._max_result_chars = max_result_chars
        self._lock = threading.Lock()
        self._tools_cache: dict[tuple[str, tuple[str, ...]], tuple[float, list[dict[str, Any]]]] = {}
        # Slugs the provider has wrapped, i.e. knows the argument aliases for (see `execute`).
        self._wrapped_slugs: set[str] = set()
        config: SDKConfig = {
            "api_key": api_key,
            "timeout": cast(int, timeout),  # typed int; the SDK hands it to httpx, which takes float
            "max_retries": max_retries,
            "allow_tracking": False,  # reaches only this thread's context: see `_tracking_off`
        }
        if base_url is not None:  # else the SDK's default (or COMPOSIO_BASE_URL)
            config["base_url"] = base_url
        self._provider = AnthropicProvider()  # the SDK binds its executor to this instance
        with _tracking_off():
            self._composio = Composio(provider=self._provider, **config)

    # --- ToolProvider

    def list_tools(self, user_id: str, toolkits: list[str]) -> list[dict[str, Any]]:
        """Anthropic tool definitions for these toolkits, cached for `tools_cache_seconds`.

        The agent loop asks before every model call; schemas change rarely, and a cache hit saves a
        round trip to Composio per turn. The key includes the user: the answer is per user by
        contract, so a future per-user filter cannot leak across users through the cache.
        """
        slugs = tuple(sorted({t.lower() for t in toolkits}))
        if not slugs:
            return []  # the SDK would list every tool Composio has
        key, now = (user_id, slugs), time.monotonic()
        with self._lock:
            cached = self._tools_cache.get(key)
        if cached is not None and now - cached[0] < self._tools_cache_seconds:
            return copy.deepcopy(cached[1])
        with self._sdk_call(f"listing tools for {', '.join(slugs)}"):
            params = self._composio.tools.get(user_id, toolkits=list(slugs), limit=self._tools_limit)
        tools: list[dict[str, Any]] = [
            {"name": p["name"], "description": p.get("description", ""), "input_schema": p["input_schema"]}
            for p in params
        ]
        if len(tools) >= self._tools_limit:
            logger.warning("tool list for %s hit the limit of %d: some tools are left out", slugs, len(tools))
        with self._lock:
            self._wrapped_slugs.update(t["name"] for t in tools)
            self._tools_cache = {
                k: v for k, v in self._tools_cache.items() if now - v[0] < self._tools_cache_seconds
            }
            self._tools_cache[key] = (now, tools)
        return copy.deepcopy(tools)

    def execute(self, user_id: str, call: ToolCall) -> ToolResult:
        """Run the tool for this user. Tool failures and request errors the model can fix (unknown
        tool, bad arguments, toolkit not connected) come back as `is_error` results; 5xx,
        429, timeouts and connection errors raise `ToolTransportError`.

        A timeout does not prove the tool did not run: a retry may repeat its side effect.
        """
        started = time.monotonic()

        def result(content: str, *, is_error: bool) -> ToolResult:
            return ToolResult(
                tool_use_id=call.id,
                content=self._redact(content),
                is_error=is_error,
                duration_seconds=time.monotonic() - started,
            )

        try:
            with self._sdk_call(f"executing {call.name}"):
                if not self._ensure_wrapped(user_id, call.name):
                    return result(f"Unknown tool {call.name!r}: it does not exist.", is_error=True)
                # The provider restores the argument names it aliased in the schema the model saw
                # (e.g. `from_rs` -> `from`). Versions: listing and execution resolve them alike,
                # pinned by COMPOSIO_TOOLKIT_VERSION_<TOOLKIT> or else "latest". The provider
                # executes with `dangerously_skip_version_check=True`, which lets "latest" through
                # (the SDK refuses it otherwise): that is the schema the model was shown, at most
                # `tools_cache_seconds` ago. Pin versions in production to rule out drift.
                response = self._provider.execute_tool_call(
                    user_id=user_id,
                    tool_call=ToolUseBlock(id=call.id, name=call.name, input=call.input, type="tool_use"),
                )
        except ToolNotFoundError:
            return result(f"Unknown tool {call.name!r}: it does not exist.", is_error=True)
        except InvalidParams as error:
            return result(f"Invalid arguments for {call.name}: {error}", is_error=True)
        except ComposioRequestError as error:
            return result(f"{call.name} was rejected: {error.message}", is_error=True)

        data = response.get("data") or {}
        if response.get("successful"):
            return result(self._bounded(_compact_json(data)), is_error=False)
        content = f"{call.name} failed: {response.get('error') or 'no error message'}"
        if data:
            content += f"\nDetails: {_compact_json(data)}"
        return result(self._bounded(content), is_error=True)

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        toolkit = toolkit.lower()
        with self._sdk_call(f"checking the {toolkit} connection"):
            page = self._composio.connected_accounts.list(
                user_ids=[user_id], toolkit_slugs=[toolkit], statuses=["ACTIVE"]
            )
        # Filtered by the server already; checked again because a filter the API ignored would
        # report another user's connection as this user's.
        return any(
            a.user_id == user_id and a.toolkit.slug == toolkit and a.status == "ACTIVE" for a in page.items
        )

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        """A Composio Connect link for this user and toolkit (`connected_accounts.link`).

        Uses the toolkit's newest enabled auth config (e.g. kron's own OAuth app, set up in the
        Composio dashboard); without one, creates a Composio-managed config as the SDK's
        `toolkits.authorize` does. Raises `ComposioRequestError` if the user is already connected.
        """
        toolkit = toolkit.lower()
        with self._sdk_call(f"creating a {toolkit} connect link"):
            auth_config_id = self._auth_config_id(toolkit)
            try:
                request = self._composio.connected_accounts.link(
                    user_id, auth_config_id, callback_url=callback_url
                )
            except ComposioMultipleConnectedAccountsError:
                raise ComposioRequestError(f"The user already has an active {toolkit} connection") from None
        if not request.redirect_url:
            raise ComposioRequestError(f"Composio returned no {toolkit} connect link")
        return str(request.redirect_url)

    # --- internals

    def _ensure_wrapped(self, user_id: str, slug: str) -> bool:
        """Make sure the provider knows the tool's argument aliases; False if the tool is unknown.

        They are learnt when tools are listed, which may have happened in another process (a
        worker restart between listing and executing): then fetch this one tool's schema.
        """
        with self._lock:
            if slug in self._wrapped_slugs:
                return True
        params = self._composio.tools.get(user_id, tools=[slug])
        with self._lock:
            self._wrapped_slugs.update(p["name"] for p in params)
            return slug in self._wrapped_slugs

    def _auth_config_id(self, toolkit: str) -> str:
        configs = self._composio.auth_configs.list(toolkit_slug=toolkit)
        enabled = [c for c in configs.items if c.status == "ENABLED"]
        if enabled:
            return str(max(enabled, key=lambda c: c.created_at or "").id)
        created = self._composio.auth_configs.create(toolkit, {"type": "use_composio_managed_auth"})
        return str(created.id)

    @contextlib.contextmanager
    def _sdk_call(self, action: str) -> Iterator[None]:
        """Run SDK calls with telemetry off and HTTP failures translated (secrets redacted).

        The originals are not chained (`from None`): they hold the request, headers included.
        """
        try:
            with _tracking_off():
                yield
        except APIStatusError as error:
            status = error.status_code
            detail = self._redact(_error_detail(error))
            if status >= 500 or status in _TRANSIENT_STATUSES:
                raise ToolTransportError(
                    f"Composio answered {status} while {action}: {detail}",
                    maybe_executed=status != 429,  # rate limiting happens before anything runs
                ) from None
            raise ComposioRequestError(f"Composio answered {status}: {detail}", status_code=status) from None
        except APIConnectionError as error:  # includes timeouts
            # Only a connection that was never made proves the request was not acted on.
            never_connected = isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
            raise ToolTransportError(
                f"Could not reach Composio while {action}: {self._redact(str(error))}",
                maybe_executed=not never_connected,
            ) from None

    def _bounded(self, content: str) -> str:
        if len(content) <= self._max_result_chars:
            return content
        return (
            content[: self._max_result_chars]
            + f"\n[truncated: showing {self._max_result_chars} of {len(content)} characters]"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, _REDACTED) if self._api_key else text


@contextlib.contextmanager
def _tracking_off() -> Iterator[None]:
    """Turn the SDK's telemetry off for the calls made inside, in whatever thread this runs.

    The SDK keeps `allow_tracking` in a ContextVar that defaults to True, and
    `Composio(allow_tracking=False)` sets it only in the constructing thread's context. Calls from
    other threads (Temporal activities, `asyncio.to_thread`) would post each call to Composio's
    telemetry host. Setting it around every call covers every thread.
    """
    token = allow_tracking.set(False)
    try:
        yield
    finally:
        allow_tracking.reset(token)


def _error_detail(error: APIStatusError) -> str:
    """The message in Composio's error envelope, else the client's summary."""
    details = error.details
    message = details.get("message") if details else None
    return str(message) if message else str(error.message)


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
