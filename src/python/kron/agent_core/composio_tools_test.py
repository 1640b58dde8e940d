"""ComposioToolProvider against FakeComposio, through the real composio SDK (HTTP boundary only)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from composio import Composio
from composio_anthropic import AnthropicProvider

from kron.agent_core.composio_tools import ComposioRequestError, ComposioToolProvider
from kron.agent_core.types import ToolCall, ToolResult, ToolTransportError
from kron_testing.fake_composio import FakeComposio, ToolFailed

API_KEY = "ck-secret-5f2c9e77a1"  # distinctive, so a leak is easy to spot
TOOLS = "/api/v3.1/tools"
EXECUTE_ISSUE = ("POST", "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE")
ISSUE_ARGS = {"owner": "kron", "repo": "app", "title": "Flaky test"}


@pytest.fixture
def fake() -> Iterator[FakeComposio]:
    with FakeComposio(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def provider(fake: FakeComposio) -> ComposioToolProvider:
    return ComposioToolProvider(API_KEY, fake.base_url, timeout=5, max_retries=0)


def call(name: str, arguments: dict[str, Any], call_id: str = "toolu_1") -> ToolCall:
    return ToolCall(id=call_id, name=name, input=arguments)


# --- list_tools


def test_list_tools_returns_anthropic_definitions_for_the_toolkits(
    fake: FakeComposio, provider: ComposioToolProvider
) -> None:
    tools = provider.list_tools("alice", ["github"])

    assert [t["name"] for t in tools] == ["GITHUB_CREATE_ISSUE"]
    (issue,) = tools
    assert set(issue) == {"name", "description", "input_schema"}
    assert issue["description"] == "Create a new issue in a GitHub repository."
    assert issue["input_schema"]["required"] == ["owner", "repo", "title"]
    assert fake.requests == [("GET", TOOLS)]


def test_list_tools_aliases_argument_names_anthropic_cannot_take(provider: ComposioToolProvider) -> None:
    (gmail,) = provider.list_tools("alice", ["gmail"])

    assert set(gmail["input_schema"]["properties"]) == {"query", "max_results", "from_rs"}


def test_list_tools_is_cached_per_user_and_toolkit_set(
    fake: FakeComposio, provider: ComposioToolProvider
) -> None:
    first = provider.list_tools("alice", ["github", "gmail"])
    first[0]["name"] = "MUTATED"  # callers get copies

    again = provider.list_tools("alice", ["GMAIL", "github"])
    assert fake.requests == [("GET", TOOLS)]
    assert sorted(t["name"] for t in again) == ["GITHUB_CREATE_ISSUE", "GMAIL_FETCH_EMAILS"]

    provider.list_tools("bob", ["github", "gmail"])
    provider.list_tools("alice", ["github"])
    assert fake.requests == [("GET", TOOLS)] * 3


def test_list_tools_cache_expires(fake: FakeComposio) -> None:
    provider = ComposioToolProvider(API_KEY, fake.base_url, max_retries=0, tools_cache_seconds=0.0)
    provider.list_tools("alice", ["github"])
    provider.list_tools("alice", ["github"])
    assert fake.requests == [("GET", TOOLS)] * 2


def test_list_tools_without_toolkits_asks_nothing(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    assert provider.list_tools("alice", []) == []
    assert fake.requests == []


def test_list_tools_failures_are_translated(fake: FakeComposio) -> None:
    wrong_key = ComposioToolProvider("ck-wrong-key", fake.base_url, max_retries=0)
    with pytest.raises(ComposioRequestError) as rejected:
        wrong_key.list_tools("alice", ["github"])
    assert rejected.value.status_code == 401

    provider = ComposioToolProvider(API_KEY, fake.base_url, max_retries=0)
    fake.stop()
    with pytest.raises(ToolTransportError):
        provider.list_tools("alice", ["github"])


# --- execute


def test_execute_runs_the_tool_for_the_user(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    fake.connect("alice", "github")
    provider.list_tools("alice", ["github"])

    result = provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS, "toolu_42"))

    assert result.tool_use_id == "toolu_42"
    assert not result.is_error
    assert json.loads(result.content) == {
        "number": 1,
        "title": "Flaky test",
        "html_url": "https://github.com/kron/app/issues/1",
        "user": {"login": "alice"},
    }
    assert ": " not in result.content  # compact JSON
    assert result.duration_seconds > 0
    assert [(e.user_id, e.slug, e.arguments) for e in fake.executions] == [
        ("alice", "GITHUB_CREATE_ISSUE", ISSUE_ARGS)
    ]
    assert fake.requests == [("GET", TOOLS), EXECUTE_ISSUE]


def test_execute_restores_aliased_argument_names(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    fake.connect("alice", "gmail")
    provider.list_tools("alice", ["gmail"])

    result = provider.execute(
        "alice", call("GMAIL_FETCH_EMAILS", {"from_rs": "bob@example.com", "max_results": 1})
    )

    assert not result.is_error, result.content
    assert fake.executions[0].arguments == {"from": "bob@example.com", "max_results": 1}


def test_execute_without_listing_first_still_restores_aliases(fake: FakeComposio) -> None:
    """Listing and executing may happen in different worker processes."""
    fake.connect("alice", "gmail")
    fresh = ComposioToolProvider(API_KEY, fake.base_url, max_retries=0)

    result = fresh.execute("alice", call("GMAIL_FETCH_EMAILS", {"from_rs": "bob@example.com"}))

    assert not result.is_error, result.content
    assert fake.executions[0].arguments == {"from": "bob@example.com"}
    assert fake.requests == [("GET", TOOLS), ("POST", "/api/v3.1/tools/execute/GMAIL_FETCH_EMAILS")]


def test_tool_failure_is_an_error_result(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    fake.connect("alice", "github")
    result = provider.execute("alice", call("GITHUB_CREATE_ISSUE", {**ISSUE_ARGS, "repo": "missing"}))

    assert result.is_error
    assert result.content == (
        "GITHUB_CREATE_ISSUE failed: Not Found: repository kron/missing does not exist or is not accessible"
    )


def test_unknown_tool_is_an_error_result(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    result = provider.execute("alice", call("GITHUB_DELETE_EVERYTHING", {}))

    assert result.is_error
    assert "Unknown tool 'GITHUB_DELETE_EVERYTHING'" in result.content
    assert fake.execution_count() == 0


def test_bad_arguments_are_an_error_result(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    fake.connect("alice", "github")
    result = provider.execute("alice", call("GITHUB_CREATE_ISSUE", {"owner": "kron"}))

    assert result.is_error
    assert "400" in result.content
    assert "missing required argument(s): repo, title" in result.content
    assert fake.execution_count() == 0


def test_toolkit_not_connected_is_an_error_result(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    fake.connect("bob", "github")  # someone else's connection does not count
    result = provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS))

    assert result.is_error
    assert "No active connected account found for user 'alice' and toolkit 'github'" in result.content


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_failures_raise_transport_error(
    fake: FakeComposio, provider: ComposioToolProvider, status: int
) -> None:
    fake.connect("alice", "github")
    fake.fail_next(1, status=status)

    with pytest.raises(
        ToolTransportError, match=f"Composio answered {status} while executing GITHUB_CREATE_ISSUE"
    ) as raised:
        provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS))
    # Only a rate limit proves nothing ran; a 5xx may come after the tool acted.
    assert raised.value.maybe_executed is (status != 429)
    assert fake.execution_count() == 0
    assert fake.requests.count(EXECUTE_ISSUE) == 1  # the SDK never retries an execution

    assert not provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS)).is_error


def test_unreachable_composio_raises_transport_error(
    fake: FakeComposio, provider: ComposioToolProvider
) -> None:
    provider.list_tools("alice", ["github"])
    fake.stop()

    with pytest.raises(ToolTransportError, match="Could not reach Composio while executing") as raised:
        provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS))
    assert raised.value.maybe_executed is False  # connection refused: the request never left


def test_timeout_raises_transport_error_though_the_tool_may_have_run(fake: FakeComposio) -> None:
    fake.connect("alice", "github")
    provider = ComposioToolProvider(API_KEY, fake.base_url, timeout=0.3, max_retries=0)
    provider.list_tools("alice", ["github"])
    fake.latency = 1.0

    with pytest.raises(ToolTransportError, match="timed out") as raised:
        provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS))
    assert raised.value.maybe_executed is True
    assert fake.execution_count("GITHUB_CREATE_ISSUE") == 1


def test_large_results_are_truncated_and_say_so(fake: FakeComposio) -> None:
    fake.connect("alice", "gmail")
    provider = ComposioToolProvider(API_KEY, fake.base_url, max_retries=0, max_result_chars=500)

    result = provider.execute("alice", call("GMAIL_FETCH_EMAILS", {"max_results": 50}))

    assert not result.is_error
    body, note = result.content.split("\n")
    assert len(body) == 500
    assert note.startswith("[truncated: showing 500 of ") and note.endswith(" characters]")


# --- connections


def test_is_connected_follows_the_users_active_accounts(
    fake: FakeComposio, provider: ComposioToolProvider
) -> None:
    assert not provider.is_connected("alice", "github")

    fake.connect("alice", "github")
    assert provider.is_connected("alice", "github")
    assert provider.is_connected("alice", "GitHub")
    assert not provider.is_connected("alice", "gmail")
    assert not provider.is_connected("bob", "github")

    fake.disconnect("alice", "github")
    assert not provider.is_connected("alice", "github")


def test_connect_link_returns_the_redirect_url(fake: FakeComposio, provider: ComposioToolProvider) -> None:
    url = provider.connect_link("alice", "gmail", callback_url="https://kron.example/connected")
    other = provider.connect_link("bob", "gmail")

    assert [(link.user_id, link.toolkit, link.callback_url) for link in fake.links] == [
        ("alice", "gmail", "https://kron.example/connected"),
        ("bob", "gmail", None),
    ]
    assert [url, other] == [link.redirect_url for link in fake.links]
    # The first link creates a Composio-managed auth config; later ones reuse it.
    assert fake.requests.count(("POST", "/api/v3.1/auth_configs")) == 1
    assert not provider.is_connected("alice", "gmail")  # pending until the user finishes


def test_connect_link_when_already_connected_is_refused(
    fake: FakeComposio, provider: ComposioToolProvider
) -> None:
    fake.connect("alice", "github")
    with pytest.raises(ComposioRequestError, match="already has an active github connection"):
        provider.connect_link("alice", "github")


# --- telemetry, threads and secrets


class NetworkRecorder:
    """Records every DNS lookup and outgoing connection in this process (audit hooks), and blocks
    those to anywhere but 127.0.0.1 so no test reaches the internet."""

    _installed = False
    _active: NetworkRecorder | None = None

    def __init__(self) -> None:
        self.destinations: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        recorder = cls._active
        if recorder is None or event not in ("socket.getaddrinfo", "socket.connect"):
            return
        target = args[0] if event == "socket.getaddrinfo" else args[1]
        with recorder._lock:
            recorder.destinations.append((event, target))
        host = target if isinstance(target, str) else target[0] if isinstance(target, tuple) else None
        if host != "127.0.0.1":
            raise PermissionError(f"test blocked a connection to {target!r}")

    def __enter__(self) -> NetworkRecorder:
        if not NetworkRecorder._installed:  # audit hooks cannot be removed: install once
            sys.addaudithook(NetworkRecorder._hook)
            NetworkRecorder._installed = True
        NetworkRecorder._active = self
        return self

    def __exit__(self, *exc: object) -> None:
        NetworkRecorder._active = None

    def hosts(self) -> set[Any]:
        with self._lock:
            return {target for event, target in self.destinations if event == "socket.getaddrinfo"}

    def connections(self) -> set[Any]:
        with self._lock:
            return {target for event, target in self.destinations if event == "socket.connect"}


TELEMETRY_FLUSH_SECONDS = 1.0  # the SDK's telemetry thread polls its queue every 0.1 s


def test_the_network_recorder_catches_sdk_telemetry_from_threads(fake: FakeComposio) -> None:
    """The control for the next test: the bare SDK, built with allow_tracking=False, still reports
    calls made from another thread to its telemetry host."""
    with NetworkRecorder() as recorder:
        sdk = Composio(
            provider=AnthropicProvider(), api_key=API_KEY, base_url=fake.base_url, allow_tracking=False
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(sdk.tools.get, "alice", toolkits=["github"]).result()
        deadline = time.monotonic() + 5
        while "telemetry.composio.dev" not in recorder.hosts() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(TELEMETRY_FLUSH_SECONDS)  # let the rest of its queue go here, not in a later test

    assert "telemetry.composio.dev" in recorder.hosts()


def test_no_telemetry_from_any_thread(fake: FakeComposio) -> None:
    fake.connect("alice", "github")
    with NetworkRecorder() as recorder:
        with ThreadPoolExecutor(max_workers=4) as pool:
            provider = pool.submit(ComposioToolProvider, API_KEY, fake.base_url, max_retries=0).result()
            jobs: list[Future[Any]] = [
                pool.submit(provider.list_tools, "alice", ["github", "gmail"]),
                pool.submit(provider.is_connected, "alice", "github"),
                pool.submit(provider.connect_link, "bob", "github"),
                pool.submit(provider.execute, "alice", call("NO_SUCH_TOOL", {})),
                pool.submit(provider.execute, "alice", call("GITHUB_CREATE_ISSUE", {"owner": "kron"})),
            ]
            jobs += [
                pool.submit(provider.execute, "alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS, f"toolu_{i}"))
                for i in range(8)
            ]
            results = [job.result() for job in jobs]
        time.sleep(TELEMETRY_FLUSH_SECONDS)

    issues = [r for r in results if isinstance(r, ToolResult) and not r.is_error]
    assert len(issues) == 8
    assert fake.execution_count("GITHUB_CREATE_ISSUE") == 8
    assert recorder.hosts() <= {"127.0.0.1"}
    assert recorder.connections() == {("127.0.0.1", fake.port)}


def test_api_key_never_leaks(fake: FakeComposio, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def leaky(user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
        raise ToolFailed(f"upstream said: bad credentials {API_KEY}")

    fake.add_tool("LEAKY_TOOL", "github", "Echoes secrets.", {"type": "object", "properties": {}}, leaky)
    fake.connect("alice", "github")
    provider = ComposioToolProvider(API_KEY, fake.base_url, timeout=0.3, max_retries=0)
    texts: list[str] = []

    def record_failure(action: Any) -> None:
        with pytest.raises(Exception) as raised:
            action()
        texts.extend([str(raised.value), repr(raised.value), *traceback.format_exception(raised.value)])

    results = [
        provider.execute("alice", call("LEAKY_TOOL", {})),
        provider.execute("alice", call("GITHUB_CREATE_ISSUE", {})),
        provider.execute("alice", call("NO_SUCH_TOOL", {})),
    ]
    fake.fail_next(1, status=503)
    record_failure(lambda: provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS)))
    fake.latency = 1.0
    record_failure(lambda: provider.execute("alice", call("GITHUB_CREATE_ISSUE", ISSUE_ARGS)))
    fake.latency = 0.0
    wrong_key = f"{API_KEY}-wrong"
    record_failure(
        lambda: ComposioToolProvider(wrong_key, fake.base_url, max_retries=0).is_connected("a", "github")
    )
    fake.stop()
    record_failure(lambda: provider.connect_link("alice", "gmail"))

    assert results[0].is_error and "[redacted]" in results[0].content
    texts += [r.content for r in results] + [caplog.text]
    assert len(texts) > 10
    for text in texts:
        assert API_KEY not in text
