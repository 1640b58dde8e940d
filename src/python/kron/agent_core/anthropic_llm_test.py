"""AnthropicLLM against FakeAnthropic, through the real SDK over HTTP."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kron.agent_core.anthropic_llm import AnthropicLLM, request_params, retry_after_seconds
from kron.agent_core.types import ModelCallError, ModelRequest, ModelResponse
from kron_testing.fake_anthropic import (
    FakeAnthropic,
    HttpReply,
    Reply,
    delay,
    drop,
    error,
    raw,
    scripted_agent,
    text,
    tool_use,
)
from kron_testing.prompt_cache import PromptCache, breakpoints

KEY = "sk-ant-api03-secret-test-key-0123456789"
USER = {"role": "user", "content": "What is on my calendar?"}
TOOLS = [{"name": "calendar", "description": "Read the calendar", "input_schema": {"type": "object"}}]


def request(messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> ModelRequest:
    return ModelRequest(model="claude-test", max_tokens=512, messages=messages or [USER], **kwargs)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeAnthropic) -> AsyncIterator[AnthropicLLM]:
    adapter = AnthropicLLM(KEY, base_url=fake.base_url, max_retries=0, timeout=5)
    yield adapter
    await adapter.aclose()


async def call_error(llm: AnthropicLLM, req: ModelRequest | None = None) -> ModelCallError:
    with pytest.raises(ModelCallError) as exc_info:
        await llm.complete(req or request())
    return exc_info.value


async def test_text_reply(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(text("Two meetings.", input_tokens=321, output_tokens=12))
    response = await llm.complete(request())

    assert response.content == [{"type": "text", "text": "Two meetings."}]
    assert response.stop_reason == "end_turn"
    assert (response.input_tokens, response.output_tokens) == (321, 12)
    assert response.model == "claude-test"
    assert response.request_id == fake.requests[0].request_id
    assert 0 < response.duration_seconds < 5


async def test_system_and_tools_sent_only_when_given(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.responder = lambda body, i: text("ok")
    await llm.complete(request())
    await llm.complete(request(system="Be brief.", tools=TOOLS))
    bare, full = (r.body or {} for r in fake.requests)
    assert "system" not in bare and "tools" not in bare
    cached = {"type": "ephemeral", "ttl": "5m"}
    assert full["system"] == [{"type": "text", "text": "Be brief.", "cache_control": cached}]
    assert full["tools"] == [{**TOOLS[0], "cache_control": cached}]


async def test_tool_use_round_trip(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(
        tool_use([("calendar", {"day": "today", "filter": None, "limits": [1, 2]})], text="Checking."),
        text("Two meetings."),
    )
    first = await llm.complete(request(tools=TOOLS))
    assert first.stop_reason == "tool_use"
    text_block, call = first.content
    assert text_block == {"type": "text", "text": "Checking."}
    assert call["input"] == {"day": "today", "filter": None, "limits": [1, 2]}  # nulls in input kept
    assert call["type"] == "tool_use" and call["name"] == "calendar" and call["id"].startswith("toolu_")

    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "standup, 1:1"}
    history: list[dict[str, Any]] = [
        USER,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [result]},
    ]
    second = await llm.complete(request(history, tools=TOOLS))
    assert second.content == [{"type": "text", "text": "Two meetings."}]

    resent = (fake.requests[1].body or {})["messages"][1]["content"]
    assert resent == first.content  # verbatim, and the fake accepted it as a valid conversation


ERROR_CASES: list[tuple[Reply, str, bool, int, float | None]] = [
    # reply, code, retryable, status, retry_after_seconds
    (error(429, retry_after=7), "model_rate_limited", True, 429, 7.0),
    (error(429, retry_after="2.5"), "model_rate_limited", True, 429, 2.5),
    (error(429, retry_after_ms=1500), "model_rate_limited", True, 429, 1.5),
    (error(429, retry_after=9, retry_after_ms=250), "model_rate_limited", True, 429, 0.25),
    (error(429), "model_rate_limited", True, 429, None),
    (error(529), "model_overloaded", True, 529, None),
    (error(500), "model_server_error", True, 500, None),
    (error(502, "api_error", "Bad gateway"), "model_server_error", True, 502, None),
    (error(503, "api_error", "Unavailable", retry_after=4), "model_server_error", True, 503, 4.0),
    (error(504), "model_server_error", True, 504, None),
    (
        raw(502, "<html>bad gateway</html>", {"content-type": "text/html"}),
        "model_server_error",
        True,
        502,
        None,
    ),
    (
        error(400, message="prompt is too long: 250000 tokens > 200000 maximum"),
        "model_bad_request",
        False,
        400,
        None,
    ),
    (error(404, message="model: claude-nope"), "model_bad_request", False, 404, None),
    (error(413), "model_bad_request", False, 413, None),
    (error(422, "invalid_request_error", "unprocessable"), "model_bad_request", False, 422, None),
    (error(401), "model_auth", False, 401, None),
    (error(403, message="This API key is blocked"), "model_permission", False, 403, None),
    (error(500, headers={"x-should-retry": "false"}), "model_server_error", False, 500, None),
]


@pytest.mark.parametrize(("reply", "code", "retryable", "status", "retry_after"), ERROR_CASES)
async def test_error_mapping(
    fake: FakeAnthropic,
    llm: AnthropicLLM,
    reply: Reply,
    code: str,
    retryable: bool,
    status: int,
    retry_after: float | None,
) -> None:
    fake.enqueue(reply)
    err = await call_error(llm)
    assert (err.code, err.retryable, err.status_code, err.retry_after_seconds) == (
        code,
        retryable,
        status,
        retry_after,
    )
    assert str(status) in err.message and fake.requests[0].request_id in err.message
    assert isinstance(reply, HttpReply)
    if reply.body.startswith(b"{"):  # the message names the API's error type and says what it said
        api_error = json.loads(reply.body)["error"]
        assert f"{api_error['type']}: {api_error['message']}" in err.message
    else:
        assert reply.body.decode() in err.message


async def test_retry_after_http_date(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(error(429, retry_after=email.utils.formatdate(time.time() + 60, usegmt=True)))
    err = await call_error(llm)
    assert err.retry_after_seconds is not None and 50 < err.retry_after_seconds <= 60


def test_retry_after_parsing_edge_cases() -> None:
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after_seconds({"retry-after": past}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    assert retry_after_seconds({}) is None


async def test_auth_errors_never_reveal_the_key(fake: FakeAnthropic) -> None:
    wrong = AnthropicLLM("sk-ant-api03-wrong-key-999", base_url=fake.base_url, max_retries=0)
    err = await call_error(wrong)
    await wrong.aclose()
    assert (err.code, err.retryable, err.status_code) == ("model_auth", False, 401)
    assert "authentication_error" in err.message and "invalid x-api-key" in err.message

    # A server that echoes the key back (and one that is not even shaped like an Anthropic key).
    odd_key = "plain-secret-0123456789"
    with FakeAnthropic(api_key=odd_key) as echoing:
        echoing.enqueue(
            error(401, message=f"key {odd_key} is revoked; also saw sk-ant-api03-other-key"),
            error(403, message=f"key {odd_key} blocked"),
            raw(502, f"proxy saw Authorization: Bearer {odd_key}"),
        )
        adapter = AnthropicLLM(odd_key, base_url=echoing.base_url, max_retries=0)
        errors = [await call_error(adapter) for _ in range(3)]
        await adapter.aclose()
    for e in errors:
        for shown in (str(e), repr(e), e.message, repr(e.args)):
            assert odd_key not in shown and "sk-ant-" not in shown
        assert "[redacted]" in e.message
        # Nothing chained: the SDK exception (whose request carries the key) must not ride along.
        assert e.__cause__ is None and e.__context__ is None
    assert [e.code for e in errors] == ["model_auth", "model_permission", "model_server_error"]
    assert repr(adapter).startswith("AnthropicLLM(") and odd_key not in repr(adapter)


async def test_dropped_connection_is_retryable(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(drop(), text("recovered"))
    err = await call_error(llm)
    assert (err.code, err.retryable, err.status_code) == ("model_unreachable", True, None)
    assert "disconnected" in err.message.lower()
    assert (await llm.complete(request())).content == [{"type": "text", "text": "recovered"}]


async def test_timeout_is_retryable(fake: FakeAnthropic) -> None:
    fake.enqueue(delay(3, text("too late")))
    impatient = AnthropicLLM(KEY, base_url=fake.base_url, max_retries=0, timeout=0.2)
    started = time.monotonic()
    err = await call_error(impatient)
    await impatient.aclose()
    assert time.monotonic() - started < 2
    assert (err.code, err.retryable) == ("model_unreachable", True)
    assert "timed out" in err.message


async def test_server_down_is_retryable() -> None:
    fake = FakeAnthropic(api_key=KEY).start()
    fake.stop()  # the port is now closed
    adapter = AnthropicLLM(KEY, base_url=fake.base_url, max_retries=0)
    err = await call_error(adapter)
    await adapter.aclose()
    assert (err.code, err.retryable) == ("model_unreachable", True)


async def test_unusable_200_is_retryable(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(raw(200, "<html>captive portal</html>"))
    err = await call_error(llm)
    assert (err.code, err.retryable, err.status_code) == ("model_bad_response", True, 200)


async def test_max_retries_zero_sends_exactly_one_request(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.responder = lambda body, i: error(529, retry_after_ms=1)
    await call_error(llm)
    assert fake.request_count == 1


async def test_sdk_retries_when_enabled(fake: FakeAnthropic) -> None:
    fake.enqueue(error(529, retry_after_ms=1), drop(), text("third time"))
    patient = AnthropicLLM(KEY, base_url=fake.base_url, max_retries=2)
    response = await patient.complete(request())
    await patient.aclose()
    assert response.content == [{"type": "text", "text": "third time"}]
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]


# ---- prompt caching


def _tool(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "description": description or f"The {name} tool.", "input_schema": {"type": "object"}}


def _turn(k: int, calls: int) -> list[dict[str, Any]]:
    """One agent turn: an assistant message with `calls` tool calls and the user's results."""
    ids = [f"toolu_{k}_{i}" for i in range(calls)]
    return [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": i, "name": "calendar", "input": {"k": k}} for i in ids
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": i, "content": f"result {i}"} for i in ids
        ]},
    ]


def test_breakpoints_on_tools_system_and_the_newest_block() -> None:
    messages = [USER, *_turn(0, 2), *_turn(1, 1)]
    tools = [_tool("zeta"), _tool("alpha"), _tool("mid")]
    params = request_params(request(messages, system="Be brief.", tools=tools))

    assert [t["name"] for t in params["tools"]] == ["alpha", "mid", "zeta"]  # sorted: a stable prefix
    assert breakpoints(params) == [
        ("tools.2", "5m"), ("system.0", "5m"), ("messages.4.content.0", "5m"),
    ]
    # Everything else goes as it came (strings as one text block: the API renders them so).
    assert params["messages"][0]["content"] == [{"type": "text", "text": USER["content"]}]
    assert params["messages"][1:4] == messages[1:4]


def test_the_request_is_not_modified_and_stray_breakpoints_are_dropped() -> None:
    stray = {"type": "text", "text": "old", "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [stray, {"type": "text", "text": "new"}]}]
    tools = [{**_tool("b"), "cache_control": {"type": "ephemeral"}}, _tool("a")]
    req = request(messages, tools=tools)
    before = req.model_dump()
    params = request_params(req)
    assert req.model_dump() == before
    assert breakpoints(params) == [("tools.1", "5m"), ("messages.0.content.1", "5m")]


def test_the_moving_breakpoint_skips_thinking_and_empty_text() -> None:
    paused = {"role": "assistant", "content": [
        {"type": "text", "text": "Let me think."},
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "  "},
    ]}
    assert breakpoints(request_params(request([USER, paused]))) == [("messages.1.content.0", "5m")]
    only_thinking = {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]}
    assert breakpoints(request_params(request([USER, only_thinking]))) == [("messages.0.content.0", "5m")]


@pytest.mark.parametrize(("calls", "intermediate"), [(9, False), (10, True), (30, True)])
def test_a_turn_of_20_blocks_or_more_gets_an_intermediate_breakpoint(calls: int, intermediate: bool) -> None:
    """A turn of n parallel calls appends 2n blocks: from 20 on, the lookback from the newest block
    cannot reach the previous request's breakpoint, so it gets one of its own."""
    messages = [USER, *_turn(0, 1), *_turn(1, calls)]
    found = breakpoints(request_params(request(messages, system="s", tools=[_tool("t")])))
    newest = ("messages.4.content." + str(calls - 1), "5m")
    previous = ("messages.2.content.0", "5m")  # where the previous request's moving breakpoint was
    assert found == [("tools.0", "5m"), ("system.0", "5m"), *([previous] if intermediate else []), newest]
    assert len(found) <= 4


def test_cache_ttl_of_the_request() -> None:
    params = request_params(request(system="s", tools=[_tool("t")], cache_ttl="1h"))
    assert {ttl for _, ttl in breakpoints(params)} == {"1h"}
    assert params["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


async def test_usage_without_cache_fields_is_zero(fake: FakeAnthropic, llm: AnthropicLLM) -> None:
    fake.enqueue(text("hi", input_tokens=50))  # no PromptCache: the fake leaves the cache fields out
    response = await llm.complete(request())
    assert (response.input_tokens, response.cache_read_input_tokens) == (50, 0)
    assert (response.cache_creation_input_tokens, response.cache_creation_1h_input_tokens) == (0, 0)


# Over the fake's default minimum of 1024 tokens (4 characters a token) on its own.
SYSTEM_PROMPT = "You are a careful assistant. " * 160
TOOL_RESULT_2KB = "x" * 2000


async def _run_turns(
    llm: AnthropicLLM, turns: int, *, system: Any = SYSTEM_PROMPT, tools: Any = None, ttl: Any = None
) -> list[ModelResponse]:
    """A tool loop driven through the adapter: each turn resends the whole conversation."""
    messages: list[dict[str, Any]] = [USER]
    responses = []
    for turn in range(turns):
        reply = await llm.complete(request(
            messages,
            system=system(turn) if callable(system) else system,
            tools=tools(turn) if callable(tools) else (tools or [_tool("calendar")]),
            cache_ttl=ttl,
        ))
        responses.append(reply)
        calls = [b for b in reply.content if b["type"] == "tool_use"]
        messages = [*messages, {"role": "assistant", "content": reply.content}]
        if not calls:
            break
        results = [{"type": "tool_result", "tool_use_id": c["id"], "content": TOOL_RESULT_2KB} for c in calls]
        messages.append({"role": "user", "content": results})
    return responses


def _total(r: ModelResponse) -> int:
    return r.input_tokens + r.cache_read_input_tokens + r.cache_creation_input_tokens


@pytest.fixture
def caching_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, prompt_cache=PromptCache()) as server:
        yield server


@pytest.fixture
async def caching_llm(caching_fake: FakeAnthropic) -> AsyncIterator[AnthropicLLM]:
    adapter = AnthropicLLM(KEY, base_url=caching_fake.base_url, max_retries=0, timeout=5)
    yield adapter
    await adapter.aclose()


async def test_each_turn_of_a_20_turn_run_reads_the_previous_request(
    caching_fake: FakeAnthropic, caching_llm: AnthropicLLM
) -> None:
    caching_fake.responder = scripted_agent(turns=19, tool_name="calendar", parallel=3)
    # Tool definitions arrive in a different order every turn: the adapter's order must not vary.
    tools = [_tool(n, "A tool. " * 40) for n in ("c", "a", "b")]
    responses = await _run_turns(caching_llm, 20, tools=lambda turn: tools[turn % 3:] + tools[:turn % 3])

    assert len(responses) == 20 and responses[-1].stop_reason == "end_turn"
    first, rest = responses[0], responses[1:]
    assert first.cache_read_input_tokens == 0 and first.cache_creation_input_tokens == _total(first)
    for previous, current in zip(responses, rest, strict=False):
        # Everything the previous request sent is read; only the new turn is written.
        assert current.cache_read_input_tokens == _total(previous)
        assert current.cache_creation_input_tokens == _total(current) - _total(previous) > 0
        assert current.input_tokens == 0
    billed = sum(r.input_tokens + 1.25 * r.cache_creation_input_tokens + 0.1 * r.cache_read_input_tokens
                 for r in responses)
    assert billed < 0.3 * sum(_total(r) for r in responses)


async def test_a_changing_system_prompt_is_never_read(
    caching_fake: FakeAnthropic, caching_llm: AnthropicLLM
) -> None:
    """What the fake catches: a timestamp in the system prompt changes the prefix every turn."""
    caching_fake.responder = scripted_agent(turns=5, tool_name="calendar")
    responses = await _run_turns(caching_llm, 5, system=lambda turn: f"{SYSTEM_PROMPT} Now: 12:0{turn}.")
    assert [r.cache_read_input_tokens for r in responses] == [0] * 5
    assert all(r.cache_creation_input_tokens == _total(r) for r in responses)


async def test_1h_ttl_is_sent_and_accounted(caching_fake: FakeAnthropic, caching_llm: AnthropicLLM) -> None:
    caching_fake.responder = scripted_agent(turns=2, tool_name="calendar")
    first, second, _ = await _run_turns(caching_llm, 3, ttl="1h")
    assert first.cache_creation_1h_input_tokens == first.cache_creation_input_tokens == _total(first)
    assert second.cache_read_input_tokens == _total(first)
    assert second.cache_creation_1h_input_tokens == second.cache_creation_input_tokens > 0
