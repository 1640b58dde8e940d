"""Talking to an MCP server a run names (`kron.contracts.mcp.McpServer`): header values resolved
from their references, a client per use over one shared connection pool, failures described
without secrets, and the URL allow-list for servers a user (not the operator) names.

Used by the worker (tool listing and calls) and by the preflights (gateway dispatch, scheduler
fires). Header values are read here, at the moment of use, and live only in memory: never in a
definition, a dispatch body, a workflow history, a log line or an error message.

Where a value may come from:
- `env`: an environment variable of the reading process whose name starts with `MCP_` (so a
  reference cannot send the process's own keys, `ANTHROPIC_API_KEY` say, to a tool server);
- `secret_key_ref {name, key}`: the file `<KRON_MCP_SECRETS_DIR>/<name>/<key>`, which is how a
  pod mounts a Kubernetes Secret (a `secret` volume per Secret under that directory).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Tool
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kron.contracts.mcp import HeaderValueFrom, McpServer

# Header values may come only from environment variables with this prefix (see the docstring).
MCP_HEADER_ENV_PREFIX = "MCP_"
# Protocol negotiation: "auto" probes `server/discover` and falls back to the initialize handshake,
# so both protocol generations of third-party servers work (facts: ../shared/notes/mcp.md).
CONNECT_MODE = "auto"
MAX_SECRET_BYTES = 16_384


class McpUnavailable(Exception):
    """A server cannot be used: `reason` says why in words that hold no secret."""

    def __init__(self, server: str, reason: str, *, not_sent: bool = False) -> None:
        super().__init__(f"MCP server {server!r}: {reason}")
        self.server = server
        self.reason = reason
        # True when no request certainly reached the server (no connection, headers unresolved).
        self.not_sent = not_sent


# ---- header values -------------------------------------------------------------------------------


def reference_errors(server: McpServer) -> list[str]:
    """What is wrong with the server's header references regardless of where they are read."""
    return [
        f"header {header}: env {ref.env} must start with {MCP_HEADER_ENV_PREFIX}"
        for header, ref in server.headers.items()
        if ref.env is not None and not ref.env.startswith(MCP_HEADER_ENV_PREFIX)
    ]


def resolve_headers(
    server: McpServer, secrets_dir: Path | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The server's headers with their values read (raises `McpUnavailable` naming the reference,
    never a value)."""
    problems = reference_errors(server)
    if problems:
        raise McpUnavailable(server.name, "; ".join(problems), not_sent=True)
    return {header: _read(server.name, header, ref, secrets_dir, environ) for header, ref in server.headers.items()}


def _read(
    server: str, header: str, ref: HeaderValueFrom, secrets_dir: Path | None, environ: Mapping[str, str]
) -> str:
    if ref.env is not None:
        value = environ.get(ref.env)
        if not value:
            raise McpUnavailable(server, f"header {header}: env {ref.env} is not set", not_sent=True)
        return value
    assert ref.secret_key_ref is not None
    name, key = ref.secret_key_ref.name, ref.secret_key_ref.key
    where = f"header {header}: secret {name}/{key}"
    if secrets_dir is None:
        raise McpUnavailable(server, f"{where}: no secrets directory is configured (KRON_MCP_SECRETS_DIR)",
                             not_sent=True)
    root = secrets_dir.resolve()
    path = (root / name / key).resolve()
    if root not in path.parents or not path.is_file():
        raise McpUnavailable(server, f"{where} is not mounted", not_sent=True)
    data = path.read_bytes()[: MAX_SECRET_BYTES + 1]
    if len(data) > MAX_SECRET_BYTES:
        raise McpUnavailable(server, f"{where} is too long for a header", not_sent=True)
    value = data.decode("utf-8", errors="replace").strip()
    if not value or any(c in value for c in "\r\n\0"):
        raise McpUnavailable(server, f"{where} is empty or not a header value", not_sent=True)
    return value


# ---- the allow-list ----------------------------------------------------------------------------


def url_allowed(url: str, allowlist: Sequence[str]) -> bool:
    """Whether `url` falls under an allow-list entry (a URL prefix): same scheme, host and port,
    and a path under the entry's path. Compared parsed, not as strings, so an entry
    `https://tools.example.com` does not admit `https://tools.example.com.evil.net/`."""
    target = _parts(url)
    if target is None:
        return False
    for entry in allowlist:
        allowed = _parts(entry)
        if allowed is None or allowed[:3] != target[:3]:
            continue
        prefix = allowed[3]
        if target[3] == prefix or target[3].startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _parts(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return (parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80),
            parts.path or "/")


def user_server_errors(servers: Sequence[McpServer], allowlist: Sequence[str]) -> list[tuple[int, str]]:
    """For MCP servers a user names (a dispatch body, a user-created agent), as opposed to the
    operator (a CRD or YAML agent): `(index, problem)` for each server whose URL is not on the
    operator's allow-list (`KRON_MCP_URL_ALLOWLIST`) or whose header references are not allowed.
    Without it, a user could point the worker at an internal address (the cloud metadata service,
    a cluster-local admin API) from inside the cluster."""
    errors: list[tuple[int, str]] = []
    for index, server in enumerate(servers):
        if not url_allowed(server.url, allowlist):
            errors.append((index, f"MCP server {server.name!r}: the URL is not on the operator's allow-list"))
        errors.extend((index, f"MCP server {server.name!r}: {p}") for p in reference_errors(server))
    return errors


# ---- clients -------------------------------------------------------------------------------------


class _SharedPool(httpx2.AsyncBaseTransport):
    """The process's connection pool, lent to per-use clients: closing one of them leaves it open."""

    def __init__(self, pool: httpx2.AsyncHTTPTransport) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class McpConnector:
    """One per process: the connection pool every MCP use shares, a `Client` per use (each use
    carries its own server's headers; a Temporal activity must not depend on a session another
    activity opened)."""

    def __init__(self, *, secrets_dir: Path | None, timeout_seconds: float = 30.0) -> None:
        self._secrets_dir = secrets_dir
        self._timeout = timeout_seconds
        self._pool = httpx2.AsyncHTTPTransport()

    @asynccontextmanager
    async def client(self, server: McpServer) -> AsyncIterator[Client]:
        """A connected client (protocol negotiated). Failing to connect raises `McpUnavailable`
        with `not_sent` (no tool request was made)."""
        headers = resolve_headers(server, self._secrets_dir)
        async with httpx2.AsyncClient(
            transport=_SharedPool(self._pool), headers=headers, timeout=httpx2.Timeout(self._timeout)
        ) as http:
            client = Client(streamable_http_client(server.url, http_client=http), mode=CONNECT_MODE)
            try:
                await client.__aenter__()
            except Exception as exc:  # noqa: BLE001 - described, never echoed
                raise McpUnavailable(server.name, describe_failure(exc), not_sent=True) from None
            try:
                yield client
            finally:
                try:
                    await client.__aexit__(None, None, None)
                except Exception:  # noqa: BLE001 - closing a stateless client: nothing to lose
                    pass

    async def list_tools(self, server: McpServer) -> list[Tool]:
        """Every tool the server lists (all pages)."""
        async with self.client(server) as client:
            try:
                tools: list[Tool] = []
                cursor: str | None = None
                for _ in range(100):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                return tools
            except Exception as exc:  # noqa: BLE001 - described, never echoed
                raise McpUnavailable(server.name, describe_failure(exc)) from None

    async def aclose(self) -> None:
        await self._pool.aclose()


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups: the SDK's task groups wrap transport errors."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_errors(inner)]
    return [exc]


def connection_refused(exc: BaseException) -> bool:
    """Whether the failure is a connection never made (so no request reached the server)."""
    leaves = leaf_errors(exc)
    return bool(leaves) and all(isinstance(e, httpx2.ConnectError) for e in leaves)


def describe_failure(exc: BaseException) -> str:
    """Why an MCP request failed, without anything the request carried (headers, arguments)."""
    leaf = leaf_errors(exc)[0]
    if isinstance(leaf, httpx2.HTTPStatusError):
        return f"the server answered HTTP {leaf.response.status_code}"
    if isinstance(leaf, httpx2.ConnectError):
        return "could not connect"
    if isinstance(leaf, httpx2.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(leaf, MCPError):
        return f"MCP error {leaf.error.code}: {_short(leaf.error.message)}"
    return f"request failed ({type(leaf).__name__})"


def _short(text: Any, limit: int = 200) -> str:
    return str(text)[:limit]


class McpSettings(BaseSettings):
    """MCP settings every deployable reads (KRON_MCP_*)."""

    model_config = SettingsConfigDict(env_prefix="KRON_MCP_", extra="ignore", env_ignore_empty=True)

    # Where the pod mounts the Secrets header values name: <dir>/<secret name>/<key>.
    secrets_dir: Path | None = None
    # Per MCP request (connect, list, call) in the worker.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # A preflight (dispatch, scheduled fire) gives each server this long to answer and list tools.
    preflight_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # URL prefixes a user-named MCP server (dispatch body, user-created agent) must fall under
    # (JSON list). Empty: users cannot name MCP servers; operator-declared agents may name any.
    url_allowlist: list[str] = Field(default_factory=list)

    def connector(self) -> McpConnector:
        return McpConnector(secrets_dir=self.secrets_dir, timeout_seconds=self.timeout_seconds)
