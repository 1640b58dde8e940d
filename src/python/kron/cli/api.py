"""The gateway's REST API over httpx: requests, tokens and the Server-Sent Events of a task.

Every failure becomes a `CliError(error, detail)`: the API's own `{"error", "detail"}` body when there
is one, a short description of the transport problem otherwise. Nothing here prints.
"""

from __future__ import annotations

import getpass
import json as jsonlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from kron.cli.config import CachedToken, TokenCache

# The gateway's user id rule (kron.gateway.tokens.USER_ID_PATTERN).
_USER_ID = re.compile(r"^[A-Za-z0-9._@|:+=-]{1,128}$")
_NOT_USER_ID_CHARS = re.compile(r"[^A-Za-z0-9._@|:+=-]")


class CliError(Exception):
    """What `main` prints as `error: <error>: <detail>` before exiting non-zero."""

    def __init__(
        self, error: str, detail: str, *, extra: Mapping[str, Any] | None = None, exit_code: int = 1
    ) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail
        self.extra = dict(extra or {})
        self.exit_code = exit_code


def default_user(environ: Mapping[str, str]) -> str:
    """`$KRON_USER`, else the login name made into a valid user id."""
    if environ.get("KRON_USER"):
        return environ["KRON_USER"]
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    name = _NOT_USER_ID_CHARS.sub("-", name)[:128]
    return name or "local"


def check_user_id(user: str) -> str:
    if not _USER_ID.fullmatch(user):
        raise CliError("invalid_user", f"{user!r} is not a valid user id (letters, digits and ._@|:+=-, at most 128)",
                       exit_code=2)
    return user


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from the lines of a stream (the subset the gateway sends, plus comments)."""
    event, event_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue  # comment (keepalive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        # `retry:` and unknown fields: ignored
    if data:
        yield SseEvent(event, "\n".join(data), event_id)


@dataclass
class Api:
    """One gateway. `token`: an explicit bearer token ($KRON_TOKEN); otherwise tokens come from the
    cache, or from POST /auth/token (dev mode) for `user`, and are cached."""

    base_url: str
    cache: TokenCache
    user: str | None = None  # None: the cached token's user, else default_user()
    token: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None
    timeout: float = 30.0
    _client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=5.0),
                transport=self.transport,
                headers={"User-Agent": "kron-cli"},
                trust_env=False,  # loopback by default: never through a proxy from the environment
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- tokens

    def issue_token(self, user: str) -> CachedToken:
        """POST /auth/token for `user` (a dev-mode gateway), cached for this gateway."""
        check_user_id(user)
        try:
            body = self._send(self._request("POST", "/auth/token", json={"user_id": user}), bearer=None)
        except CliError as error:
            if error.error == "not_found":
                raise CliError(
                    "no_token",
                    f"{self.base_url} does not issue tokens (POST /auth/token is off outside dev mode): "
                    "sign in with `kron login`, or set KRON_TOKEN to a token from your identity provider",
                ) from None
            raise
        token = CachedToken(str(body["access_token"]), user, time.time() + float(body.get("expires_in", 0)))
        self.cache.put(self.base_url, token)
        return token

    def _bearer(self, *, fresh: bool = False) -> str:
        if self.token:
            return self.token
        cached = None if fresh else self.cache.get(self.base_url)
        if cached is not None and cached.usable() and (self.user is None or cached.user == self.user):
            return cached.access_token
        user = self.user or (cached.user if cached else None) or default_user(self.environ)
        return self.issue_token(user).access_token

    # --- requests

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """An authenticated request; the parsed JSON body (None for 204). A 401 with a cached token
        gets one fresh token and one retry."""
        request = self._request(method, path, json=json, params=params, headers=headers)
        try:
            return self._send(request, bearer=self._bearer())
        except CliError as error:
            if error.extra.get("status_code") != 401 or self.token:
                raise
        self.cache.forget(self.base_url)
        return self._send(request, bearer=self._bearer(fresh=True))

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        return self.client.build_request(method, path, json=json, params=clean_params, headers=headers)

    def _send(self, request: httpx.Request, *, bearer: str | None) -> Any:
        """Send `request` (with this bearer token, if any); the parsed JSON body (None for 204)."""
        if bearer is not None:
            request.headers["Authorization"] = f"Bearer {bearer}"
        try:
            response = self.client.send(request)
        except httpx.HTTPError as error:
            raise self.transport_error(error) from None
        if response.status_code >= 400:
            raise api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError("bad_response", f"{request.method} {request.url.path} answered {response.status_code} "
                                           "without JSON") from None

    def transport_error(self, error: httpx.HTTPError) -> CliError:
        if isinstance(error, httpx.ConnectError):
            return CliError(
                "gateway_unreachable",
                f"cannot connect to {self.base_url} (is `kron up` running? else set --gateway or KRON_GATEWAY_URL)",
            )
        if isinstance(error, httpx.TimeoutException):
            return CliError("timeout", f"{self.base_url} did not answer in time")
        return CliError("connection_error", f"{self.base_url}: {type(error).__name__}: {error}")

    # --- events

    def events(self, task_id: str, *, give_up_after_seconds: float = 60.0) -> Iterator[SseEvent]:
        """Every event of GET /tasks/{id}/events until `end`, reconnecting (with Last-Event-ID, so
        no step is repeated or lost) when the stream drops or reports an `error`."""
        last_id: str | None = None
        failing_since: float | None = None
        delay = 0.5
        fresh = False
        while True:
            headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self._bearer(fresh=fresh)}"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            problem: CliError
            try:
                with self.client.stream(
                    "GET", f"/tasks/{task_id}/events", headers=headers,
                    timeout=httpx.Timeout(self.timeout, connect=5.0, read=90.0),
                ) as response:
                    if response.status_code == 401 and not self.token and not fresh:
                        self.cache.forget(self.base_url)
                        fresh = True
                        continue
                    if response.status_code >= 400:
                        response.read()
                        error = api_error(response)
                        if response.status_code != 503:
                            raise error
                        problem = error
                    else:
                        problem = CliError("stream_lost", "the event stream ended before the task did")
                        for event in parse_sse(response.iter_lines()):
                            failing_since, delay = None, 0.5
                            if event.event == "error":
                                problem = _error_event(event)
                                break
                            if event.id is not None:
                                last_id = event.id
                            yield event
                            if event.event == "end":
                                return
            except httpx.HTTPError as error:
                problem = self.transport_error(error)
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > give_up_after_seconds:
                raise problem
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _error_event(event: SseEvent) -> CliError:
    try:
        body = jsonlib.loads(event.data)
        return CliError(str(body.get("error", "stream_error")), str(body.get("detail", "")))
    except (ValueError, AttributeError):
        return CliError("stream_error", event.data[:200])


def api_error(response: httpx.Response) -> CliError:
    """The API's `{"error", "detail", ...}` body as a CliError (status code in `extra`)."""
    extra: dict[str, Any] = {"status_code": response.status_code}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        extra.update({k: v for k, v in body.items() if k not in ("error", "detail")})
        return CliError(str(body["error"]), str(body.get("detail", "")), extra=extra)
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
    return CliError(f"http_{response.status_code}", text or "no detail", extra=extra)
