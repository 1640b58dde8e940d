"""A local server speaking the part of Composio's REST API (v3.1) that kron uses, for tests.

Point the real `composio` SDK at it with `base_url=fake.base_url`. It runs in a background thread of
the test process (a `ThreadingHTTPServer`), so workers in other processes can use it too.

    with FakeComposio(api_key="ck-test") as fake:
        fake.connect("user-1", "github")
        ...  # the code under test lists and executes tools for "user-1"
        assert fake.execution_count("GITHUB_CREATE_ISSUE") == 1

Endpoints (what the 0.29 SDK calls for listing, executing, connection checks and connect links):
`GET /tools`, `GET /tools/{slug}`, `POST /tools/execute/{slug}`, `GET /connected_accounts`,
`POST /connected_accounts/link`, `GET /auth_configs`, `POST /auth_configs`. Anything else is a 404,
recorded in `requests` like every other call. Responses follow the `composio_client` models (errors
use Composio's `{"error": {"message", "code", "slug", "status", "request_id"}}` envelope).

Execution behaves like the real API where kron depends on it: an unknown tool is a 404, missing or
unknown arguments are a 400, a tool whose toolkit the user has not connected is a 400, and a tool
that ran but failed (its handler raised `ToolFailed`) is a 200 with `successful: false`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kron_testing.loopback import LoopbackHandler, LoopbackServer

API_PREFIX = "/api/v3.1"
DEFAULT_TOOL_VERSION = "20250909_00"


class ToolFailed(Exception):
    """Raised by a tool handler: the tool ran and reported failure (`successful: false`)."""


ToolHandler = Callable[[str, dict[str, Any]], dict[str, Any]]  # (user_id, arguments) -> data


@dataclass(frozen=True)
class FakeTool:
    slug: str
    toolkit: str
    description: str
    input_schema: dict[str, Any]
    handler: ToolHandler
    version: str = DEFAULT_TOOL_VERSION
    no_auth: bool = False


@dataclass
class ConnectedAccount:
    id: str
    user_id: str
    toolkit: str
    auth_config_id: str
    status: str  # ACTIVE, INITIATED, INACTIVE, ...
    created_at: str


class Execution(NamedTuple):
    user_id: str
    slug: str
    arguments: dict[str, Any]
    time: float  # time.monotonic() when the tool ran


class LinkRequest(NamedTuple):
    user_id: str
    toolkit: str
    callback_url: str | None
    redirect_url: str


class _ApiError(Exception):
    def __init__(self, status: int, message: str, slug: str = "Error") -> None:
        super().__init__(message)
        self.status, self.message, self.slug = status, message, slug


class FakeComposio(LoopbackServer):
    def __init__(self, api_key: str = "ck-fake-test-key", *, demo_tools: bool = True, port: int = 0) -> None:
        self.api_key = api_key
        # Seconds to wait before sending each response, after the work is done (so a client that
        # times out on an execution still had its tool run). May be changed any time.
        self.latency = 0.0
        self.errors: list[BaseException] = []  # handlers (or the fake) raising something unexpected
        super().__init__(port)
        self._tools: dict[str, FakeTool] = {}
        self._accounts: list[ConnectedAccount] = []
        self._auth_configs: dict[str, str] = {}  # toolkit -> auth config id
        self._fail_next: list[int] = []  # statuses for the next executions
        self._executions: list[Execution] = []
        self._requests: list[tuple[str, str]] = []
        self._links: list[LinkRequest] = []
        if demo_tools:
            _add_demo_tools(self)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess whose SDK client should use this fake."""
        return {"COMPOSIO_BASE_URL": self.base_url, "COMPOSIO_API_KEY": self.api_key}

    # --- scripting

    def add_tool(
        self,
        slug: str,
        toolkit: str,
        description: str,
        input_schema: dict[str, Any],
        handler: ToolHandler,
        *,
        version: str = DEFAULT_TOOL_VERSION,
        no_auth: bool = False,
    ) -> None:
        """Add (or replace) a tool. `handler(user_id, arguments)` returns the result data or raises
        `ToolFailed`; `no_auth` tools run without a connected account."""
        tool = FakeTool(slug, toolkit.lower(), description, input_schema, handler, version, no_auth)
        with self._lock:
            self._tools[slug] = tool

    def connect(self, user_id: str, toolkit: str) -> str:
        """Give the user an ACTIVE connected account for the toolkit; returns its id."""
        with self._lock:
            account = ConnectedAccount(
                id=f"ca_{uuid.uuid4().hex[:12]}",
                user_id=user_id,
                toolkit=toolkit.lower(),
                auth_config_id=self._auth_config_id(toolkit.lower(), create=True),
                status="ACTIVE",
                created_at=_now_iso(),
            )
            self._accounts.append(account)
            return account.id

    def disconnect(self, user_id: str, toolkit: str) -> None:
        """Mark the user's accounts for the toolkit INACTIVE (they stay listed, like the real API)."""
        with self._lock:
            for account in self._accounts:
                if account.user_id == user_id and account.toolkit == toolkit.lower():
                    account.status = "INACTIVE"

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next `n` tool executions with `status` (before running the tool)."""
        with self._lock:
            self._fail_next.extend([status] * n)

    def reset(self) -> None:
        """Forget recorded requests, executions, links and injected failures (tools and accounts stay)."""
        with self._lock:
            self._fail_next.clear()
            self._executions.clear()
            self._requests.clear()
            self._links.clear()
            self.errors.clear()

    # --- accounting

    @property
    def executions(self) -> list[Execution]:
        """Tool runs (handler called), in order."""
        with self._lock:
            return list(self._executions)

    def execution_count(self, slug: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self._executions if slug is None or e.slug == slug)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request as (method, path without the query), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def links(self) -> list[LinkRequest]:
        with self._lock:
            return list(self._links)

    def accounts(self, user_id: str | None = None) -> list[ConnectedAccount]:
        with self._lock:
            return [a for a in self._accounts if user_id is None or a.user_id == user_id]

    # --- request handling (runs in the connection's thread)

    def _handle(self, handler: LoopbackHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        data = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        with self._lock:
            self._requests.append((handler.command, url.path))
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = None
        try:
            if handler.headers.get("x-api-key") != self.api_key:
                raise _ApiError(401, "Invalid API key", "Auth_InvalidApiKey")
            if not isinstance(body, dict):
                raise _ApiError(400, "Request body must be a JSON object", "BadRequest")
            query = {k: _split(v) for k, v in parse_qs(url.query).items()}
            status, payload = 200, self._route(handler.command, url.path, query, body)
        except _ApiError as err:
            status, payload = err.status, _error_body(err)
        except Exception as exc:  # a bug in the fake or a handler: surface it to the test
            self.errors.append(exc)
            status, payload = 500, _error_body(_ApiError(500, "Internal server error", "InternalServerError"))
        if self.latency and self._stopping.wait(self.latency):
            handler.close_connection = True
            return
        self._send(handler, status, payload)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        parts = path.removeprefix(API_PREFIX).strip("/").split("/")
        match method, parts:
            case "GET", ["tools"]:
                return self._list_tools(query)
            case "GET", ["tools", slug]:
                return _tool_json(self._tool(slug))
            case "POST", ["tools", "execute", slug]:
                return self._execute(slug, body)
            case "GET", ["connected_accounts"]:
                return self._list_accounts(query)
            case "POST", ["connected_accounts", "link"]:
                return self._create_link(body)
            case "GET", ["auth_configs"]:
                return self._list_auth_configs(query)
            case "POST", ["auth_configs"]:
                return self._create_auth_config(body)
        raise _ApiError(404, f"Not found: {method} {path}", "NotFound")

    def _tool(self, slug: str) -> FakeTool:
        with self._lock:
            tool = self._tools.get(slug)
        if tool is None:
            raise _ApiError(404, f"Tool {slug} not found", "Tool_ToolNotFound")
        return tool

    def _list_tools(self, query: dict[str, list[str]]) -> dict[str, Any]:
        toolkits = {t.lower() for t in query.get("toolkit_slug", [])}
        slugs = set(query.get("tool_slugs", []))
        with self._lock:
            tools = [
                t
                for t in self._tools.values()
                if (not toolkits or t.toolkit in toolkits) and (not slugs or t.slug in slugs)
            ]
        return _page([_tool_json(t) for t in tools], query)

    def _execute(self, slug: str, body: dict[str, Any]) -> dict[str, Any]:
        tool = self._tool(slug)
        with self._lock:
            injected = self._fail_next.pop(0) if self._fail_next else None
        if injected is not None:
            raise _ApiError(injected, f"Injected failure ({injected})", "Injected")
        user_id = body.get("user_id")
        arguments = body.get("arguments") or {}
        if not isinstance(user_id, str) or not user_id:
            raise _ApiError(400, "user_id is required", "ActionExecute_UserIdRequired")
        if not tool.no_auth and not self._is_connected(user_id, tool.toolkit):
            raise _ApiError(
                400,
                f"No active connected account found for user '{user_id}' and toolkit '{tool.toolkit}'",
                "ActionExecute_ConnectedAccountNotFound",
            )
        problem = _invalid_arguments(tool.input_schema, arguments)
        if problem is not None:
            raise _ApiError(
                400, f"Invalid request data provided: {problem}", "ActionExecute_InvalidArguments"
            )
        with self._lock:
            self._executions.append(Execution(user_id, slug, dict(arguments), time.monotonic()))
        log_id = f"log_{uuid.uuid4().hex[:12]}"
        try:
            data = tool.handler(user_id, dict(arguments))
        except ToolFailed as failure:
            return {"data": {}, "error": str(failure), "successful": False, "log_id": log_id}
        return {"data": data, "error": None, "successful": True, "log_id": log_id}

    def _is_connected(self, user_id: str, toolkit: str) -> bool:
        with self._lock:
            return any(
                a.user_id == user_id and a.toolkit == toolkit and a.status == "ACTIVE" for a in self._accounts
            )

    def _list_accounts(self, query: dict[str, list[str]]) -> dict[str, Any]:
        filters = {
            "user_id": set(query.get("user_ids", [])),
            "toolkit": {t.lower() for t in query.get("toolkit_slugs", [])},
            "status": set(query.get("statuses", [])),
            "auth_config_id": set(query.get("auth_config_ids", [])),
        }
        with self._lock:
            accounts = [
                _account_json(a)
                for a in self._accounts
                if all(not wanted or getattr(a, field) in wanted for field, wanted in filters.items())
            ]
        return _page(accounts, query)

    def _auth_config_id(self, toolkit: str, *, create: bool) -> str:
        """Call with the lock held."""
        if toolkit not in self._auth_configs and create:
            self._auth_configs[toolkit] = f"ac_{uuid.uuid4().hex[:12]}"
        return self._auth_configs.get(toolkit, "")

    def _list_auth_configs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        toolkits = {t.lower() for t in query.get("toolkit_slug", [])}
        with self._lock:
            configs = [
                _auth_config_json(config_id, toolkit)
                for toolkit, config_id in self._auth_configs.items()
                if not toolkits or toolkit in toolkits
            ]
        return _page(configs, query)

    def _create_auth_config(self, body: dict[str, Any]) -> dict[str, Any]:
        toolkit = str((body.get("toolkit") or {}).get("slug") or "").lower()
        if not toolkit:
            raise _ApiError(400, "toolkit.slug is required", "AuthConfig_ToolkitRequired")
        with self._lock:
            config_id = self._auth_config_id(toolkit, create=True)
        return {
            "auth_config": {"id": config_id, "auth_scheme": "OAUTH2", "is_composio_managed": True},
            "toolkit": {"slug": toolkit},
        }

    def _create_link(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id, config_id = body.get("user_id"), body.get("auth_config_id")
        with self._lock:
            toolkit = next((t for t, c in self._auth_configs.items() if c == config_id), None)
        if not isinstance(user_id, str) or not user_id or toolkit is None:
            raise _ApiError(400, "user_id and a valid auth_config_id are required", "Link_InvalidRequest")
        token = f"lt_{uuid.uuid4().hex[:16]}"
        redirect_url = f"{self.base_url}/link/{token}"
        account = ConnectedAccount(
            f"ca_{uuid.uuid4().hex[:12]}", user_id, toolkit, str(config_id), "INITIATED", _now_iso()
        )
        with self._lock:
            self._accounts.append(account)
            self._links.append(LinkRequest(user_id, toolkit, body.get("callback_url"), redirect_url))
        return {
            "connected_account_id": account.id,
            "link_token": token,
            "redirect_url": redirect_url,
            "expires_at": _now_iso(offset_seconds=600),
        }

    def _send(self, handler: LoopbackHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client went away
            handler.close_connection = True



# --------------------------------------------------------------------------------------------
# Wire shapes


def _split(values: list[str]) -> list[str]:
    """Query lists arrive as repeated keys or comma-separated values; accept both."""
    return [item for value in values for item in value.split(",") if item]


def _now_iso(offset_seconds: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + offset_seconds))


def _error_body(err: _ApiError) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "code": err.status * 10,
            "slug": err.slug,
            "status": err.status,
            "request_id": f"req_{uuid.uuid4().hex[:12]}",
        }
    }


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """One page of `items`. The cursor is the offset of the next page."""
    start = int((query.get("cursor") or ["0"])[0])
    limit = int(float((query.get("limit") or ["1000"])[0]))
    end = start + limit
    return {
        "items": items[start:end],
        "next_cursor": str(end) if end < len(items) else None,
        "total_items": len(items),
        "current_page": start // limit + 1 if limit else 1,
        "total_pages": max(1, -(-len(items) // limit)) if limit else 1,
    }


def _tool_json(tool: FakeTool) -> dict[str, Any]:
    toolkit = {"slug": tool.toolkit, "name": tool.toolkit.title(), "logo": ""}
    return {
        "slug": tool.slug,
        "name": tool.slug.replace("_", " ").title(),
        "description": tool.description,
        "human_description": None,
        "input_parameters": tool.input_schema,
        "output_parameters": {"type": "object", "properties": {}},
        "toolkit": toolkit,
        "version": tool.version,
        "available_versions": [tool.version],
        "deprecated": {
            "available_versions": [tool.version],
            "displayName": tool.slug,
            "is_deprecated": False,
            "toolkit": {"logo": ""},
            "version": tool.version,
        },
        "is_deprecated": False,
        "no_auth": tool.no_auth,
        "scopes": [],
        "tags": [],
    }


def _account_json(account: ConnectedAccount) -> dict[str, Any]:
    state: dict[str, Any] = {"status": account.status}
    if account.status in ("ACTIVE", "INACTIVE"):
        state["access_token"] = "fake-access-token"
    if account.status == "INITIATED":
        state["redirect_url"] = "https://example.invalid/oauth"
    return {
        "id": account.id,
        "user_id": account.user_id,
        "status": account.status,
        "toolkit": {"slug": account.toolkit},
        "auth_config": {
            "id": account.auth_config_id,
            "auth_scheme": "OAUTH2",
            "is_composio_managed": True,
            "is_disabled": False,
        },
        "data": {},
        "state": {"authScheme": "OAUTH2", "val": state},
        "is_disabled": False,
        "created_at": account.created_at,
        "updated_at": account.created_at,
    }


def _auth_config_json(config_id: str, toolkit: str) -> dict[str, Any]:
    return {
        "id": config_id,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, config_id)),
        "name": f"{toolkit} (Composio managed)",
        "type": "default",
        "status": "ENABLED",
        "auth_scheme": "OAUTH2",
        "is_composio_managed": True,
        "no_of_connections": 0,
        "created_at": _now_iso(),
        "tool_access_config": {},
        "toolkit": {"slug": toolkit, "logo": ""},
    }


def _invalid_arguments(schema: Mapping[str, Any], arguments: Any) -> str | None:
    """Top-level checks only: an object, required keys present, no unknown keys."""
    if not isinstance(arguments, dict):
        return "arguments must be an object"
    properties = schema.get("properties") or {}
    missing = [name for name in schema.get("required", []) if name not in arguments]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    unknown = [name for name in arguments if name not in properties]
    if unknown:
        return f"unknown argument(s): {', '.join(unknown)}"
    return None


# --------------------------------------------------------------------------------------------
# Demo tools


def _add_demo_tools(fake: FakeComposio) -> None:
    issue_numbers: dict[str, int] = {}
    numbers_lock = threading.Lock()

    def create_issue(user_id: str, args: dict[str, Any]) -> dict[str, Any]:
        repo = f"{args['owner']}/{args['repo']}"
        if args["repo"] == "missing":
            raise ToolFailed(f"Not Found: repository {repo} does not exist or is not accessible")
        with numbers_lock:
            number = issue_numbers[repo] = issue_numbers.get(repo, 0) + 1
        return {
            "number": number,
            "title": args["title"],
            "html_url": f"https://github.com/{repo}/issues/{number}",
            "user": {"login": user_id},
        }

    fake.add_tool(
        "GITHUB_CREATE_ISSUE",
        "github",
        "Create a new issue in a GitHub repository.",
        {
            "type": "object",
            "properties": {
                "owner": {"type": "string", "description": "Repository owner."},
                "repo": {"type": "string", "description": "Repository name."},
                "title": {"type": "string", "description": "Issue title."},
                "body": {"type": "string", "description": "Issue body (markdown)."},
            },
            "required": ["owner", "repo", "title"],
        },
        create_issue,
    )

    def fetch_emails(user_id: str, args: dict[str, Any]) -> dict[str, Any]:
        count = int(args.get("max_results", 3))
        sender = args.get("from", "alice@example.com")
        messages = [
            {
                "id": f"msg{i}",
                "from": sender,
                "to": f"{user_id}@example.com",
                "subject": f"Message {i}",
                "snippet": "lorem ipsum " * 20,
            }
            for i in range(count)
        ]
        return {"messages": messages, "resultSizeEstimate": count}

    fake.add_tool(
        "GMAIL_FETCH_EMAILS",
        "gmail",
        "Fetch emails from the user's Gmail inbox.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Gmail search query."},
                "max_results": {"type": "integer", "description": "At most this many messages."},
                # A Python keyword: the Anthropic provider exposes it under an alias.
                "from": {"type": "string", "description": "Only messages from this sender."},
            },
            "required": [],
        },
        fetch_emails,
    )
