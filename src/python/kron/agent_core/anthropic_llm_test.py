"""AnthropicLLM against FakeAnthropic, through the real SDK over HTTP."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kron.agent_core.anthropic_llm import AnthropicLLM, retry_after_seconds
from kron.agent_core.types import ModelCallError, ModelRequest
from kron_testing.fake_anthropic import (
    FakeAnthropic,
    HttpReply,
    Reply,
    delay,
    drop,
    error,
    raw,
    text,
    tool_use,
)

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
    assert full["system"] == "Be brief." and full["tools"] == TOOLS


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
