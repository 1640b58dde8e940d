"""FakeAnthropic, driven through the real `anthropic` SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from kron_testing.fake_anthropic import (
    FakeAnthropic,
    delay,
    drop,
    error,
    max_tokens,
    raw,
    refusal,
    scripted_agent,
    text,
    tool_use,
    turn_of,
)

USER = {"role": "user", "content": "hello"}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-fake-123") as server:
        yield server


def client(fake: FakeAnthropic, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, **kwargs)


def create(c: anthropic.Anthropic, messages: list[dict[str, Any]], **kwargs: Any) -> anthropic.types.Message:
    return c.messages.create(model="claude-test", max_tokens=256, messages=messages, **kwargs)  # type: ignore[arg-type]


def post(fake: FakeAnthropic, body: object, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A request the SDK would refuse to send."""
    req = urllib.request.Request(
        fake.base_url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def tool_results(message: anthropic.types.Message) -> dict[str, Any]:
    blocks = [
        {"type": "tool_result", "tool_use_id": b.id, "content": "ok"}
        for b in message.content
        if b.type == "tool_use"
    ]
    return {"role": "user", "content": blocks}


def test_text_reply_shape_usage_and_request_id(fake: FakeAnthropic) -> None:
    fake.enqueue(text("hi there", input_tokens=7, output_tokens=3))
    message = create(client(fake), [USER])

    assert message.content[0].type == "text" and message.content[0].text == "hi there"
    assert (message.stop_reason, message.model, message.role) == ("end_turn", "claude-test", "assistant")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    [request] = fake.requests
    assert message._request_id == request.request_id and request.request_id.startswith("req_")
    assert request.body == {"model": "claude-test", "max_tokens": 256, "messages": [USER]}
    assert request.headers["authorization"] == "Bearer sk-ant-fake-123"
    assert request.status == 200 and request.responded_at is not None
    assert request.responded_at >= request.received_at


def test_auth_bearer_or_x_api_key_else_401(fake: FakeAnthropic) -> None:
    fake.responder = lambda body, i: text("ok")
    body = {"model": "m", "max_tokens": 5, "messages": [USER]}
    assert post(fake, body, {"x-api-key": fake.api_key})[0] == 200
    status, payload = post(fake, body, {"x-api-key": "wrong"})
    assert status == 401
    assert payload == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }

    bad = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=fake.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        create(bad, [USER])


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": 5, "messages": [USER]},
        {"model": "m", "messages": [USER]},
        {"model": "m", "max_tokens": 5},
        {"model": "m", "max_tokens": 5, "messages": []},
        [1, 2],
    ],
)
def test_minimal_body_validation(fake: FakeAnthropic, body: object) -> None:
    fake.responder = lambda body, i: text("ok")
    status, payload = post(fake, body, {"x-api-key": fake.api_key})
    assert status == 400 and payload["error"]["type"] == "invalid_request_error"


def test_broken_tool_conversations_are_rejected_like_the_api(fake: FakeAnthropic) -> None:
    fake.responder = lambda body, i: text("ok")
    asked = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}],
    }
    answered = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}],
    }
    stray = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}
    c = client(fake)
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
        create(c, [USER, asked, {"role": "user", "content": "go on"}])
    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        create(c, [USER, {"role": "assistant", "content": "hm"}, stray])
    with pytest.raises(anthropic.BadRequestError, match="must be unique"):
        create(c, [USER, asked, answered, asked, answered])
    assert create(c, [USER, asked, answered]).content[0].type == "text"

    fake.validate_conversation = False
    assert create(c, [USER, asked, {"role": "user", "content": "go on"}]).stop_reason == "end_turn"


def test_queue_first_then_responder_then_loud_failure(fake: FakeAnthropic) -> None:
    c = client(fake)
    fake.enqueue(text("one"), text("two"))
    assert [text_of(create(c, [USER])) for _ in range(2)] == ["one", "two"]
    with pytest.raises(anthropic.BadRequestError, match="no reply scripted for request 2"):
        create(c, [USER])

    calls: list[int] = []

    def respond(body: dict[str, Any], call_index: int) -> Any:
        calls.append(call_index)
        return text(f"call {call_index}")

    fake.responder = respond
    fake.enqueue(text("queued"))
    assert text_of(create(c, [USER])) == "queued"
    assert text_of(create(c, [USER])) == "call 4"
    assert calls == [4] and fake.pending_replies == 0


def test_responder_exception_is_recorded_and_answered_400(fake: FakeAnthropic) -> None:
    def broken(body: dict[str, Any], call_index: int) -> Any:
        raise KeyError("oops")

    fake.responder = broken
    with pytest.raises(anthropic.BadRequestError, match="responder failed"):
        create(client(fake), [USER])
    assert len(fake.responder_errors) == 1 and isinstance(fake.responder_errors[0], KeyError)


def test_tool_use_ids_are_deterministic_per_conversation_and_turn(fake: FakeAnthropic) -> None:
    fake.responder = lambda body, i: tool_use(
        [("search", {"q": 1}), ("search", {"q": 2})], text="let me look"
    )
    c = client(fake)
    first = create(c, [USER])
    again = create(c, [USER])
    other = create(c, [{"role": "user", "content": "another task"}])
    assert [b.type for b in first.content] == ["text", "tool_use", "tool_use"]
    ids = [b.id for b in first.content if b.type == "tool_use"]
    assert len(set(ids)) == 2 and all(i.startswith("toolu_") for i in ids)
    assert [b.id for b in again.content if b.type == "tool_use"] == ids  # a re-issued call
    assert not set(ids) & {b.id for b in other.content if b.type == "tool_use"}
    next_turn = create(c, [USER, {"role": "assistant", "content": first.content}, tool_results(first)])
    assert not set(ids) & {b.id for b in next_turn.content if b.type == "tool_use"}

    fake.enqueue(tool_use([("a", {}), ("b", {})], ids=["toolu_x", "toolu_y"]))
    assert [b.id for b in create(c, [USER]).content if b.type == "tool_use"] == ["toolu_x", "toolu_y"]


def test_scripted_agent_runs_turns_with_parallel_calls(fake: FakeAnthropic) -> None:
    fake.responder = scripted_agent(
        turns=3,
        tool_name="fetch",
        tool_input_fn=lambda t, i: {"page": t * 10 + i},
        parallel=2,
        final_text="all done",
        input_tokens=50,
        output_tokens=5,
    )
    c = client(fake)
    messages: list[dict[str, Any]] = [USER]
    seen_inputs = []
    while True:
        reply = create(c, messages)
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (50, 5)
        if reply.stop_reason != "tool_use":
            break
        seen_inputs += [b.input for b in reply.content if b.type == "tool_use"]
        messages += [{"role": "assistant", "content": reply.content}, tool_results(reply)]
    assert text_of(reply) == "all done"
    assert seen_inputs == [{"page": p} for p in (0, 1, 10, 11, 20, 21)]
    assert fake.count_by_turn() == {0: 1, 1: 1, 2: 1, 3: 1}
    assert [turn_of(r.body) for r in fake.requests if r.body] == [0, 1, 2, 3]


def test_count_by_turn_filters_by_status(fake: FakeAnthropic) -> None:
    fake.enqueue(error(529), text("ok"))
    c = client(fake)
    with pytest.raises(anthropic.OverloadedError):
        create(c, [USER])
    create(c, [USER])
    assert fake.count_by_turn() == {0: 2}
    assert fake.count_by_turn(status=200) == {0: 1}


def test_error_replies_and_retry_headers(fake: FakeAnthropic) -> None:
    fake.enqueue(
        error(529),
        error(429, message="slow down", retry_after=3, retry_after_ms=2500),
        error(400, "invalid_request_error", "prompt is too long"),
    )
    c = client(fake)
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        create(c, [USER])
    assert overloaded.value.type == "overloaded_error"
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    with pytest.raises(anthropic.RateLimitError) as limited:
        create(c, [USER])
    assert limited.value.api_message == "slow down"
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.response.headers["retry-after-ms"] == "2500"
    assert limited.value.request_id == fake.requests[1].request_id
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        create(c, [USER])


def test_sdk_retry_honours_retry_after_and_timing_is_recorded(fake: FakeAnthropic) -> None:
    fake.enqueue(error(429, retry_after_ms=300), text("ok"))
    create(client(fake, max_retries=1), [USER])
    limited, retried = fake.requests
    assert limited.status == 429 and retried.status == 200
    assert retried.headers["x-stainless-retry-count"] == "1"
    assert limited.responded_at is not None
    assert retried.received_at - limited.responded_at >= 0.3


def test_stop_reasons_max_tokens_and_refusal(fake: FakeAnthropic) -> None:
    fake.enqueue(max_tokens("The answer is"), refusal(), refusal("I can", category="cyber"))
    c = client(fake)
    cut = create(c, [USER])
    assert cut.stop_reason == "max_tokens" and text_of(cut) == "The answer is"
    refused = create(c, [USER])
    assert refused.stop_reason == "refusal" and refused.content == []
    assert refused.stop_details is not None and refused.stop_details.type == "refusal"
    assert create(c, [USER]).stop_details.category == "cyber"  # type: ignore[union-attr]


def test_delay_slows_the_reply_and_client_timeouts_fire(fake: FakeAnthropic) -> None:
    fake.enqueue(delay(0.3, text("late")), delay(2, text("too late")))
    c = client(fake)
    started = time.monotonic()
    assert text_of(create(c, [USER])) == "late"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(anthropic.APITimeoutError):
        create(client(fake, timeout=0.2), [USER])


def test_drop_closes_the_connection_without_a_response(fake: FakeAnthropic) -> None:
    fake.enqueue(drop(), text("after"))
    c = client(fake)
    with pytest.raises(anthropic.APIConnectionError):
        create(c, [USER])
    assert fake.requests[0].status is None
    assert text_of(create(c, [USER])) == "after"


def test_raw_reply_passes_bytes_through(fake: FakeAnthropic) -> None:
    fake.enqueue(raw(502, "<html>bad gateway</html>", {"content-type": "text/html"}))
    with pytest.raises(anthropic.InternalServerError) as exc_info:
        create(client(fake), [USER])
    assert exc_info.value.status_code == 502


def test_streaming_yields_the_same_message(fake: FakeAnthropic) -> None:
    reply = tool_use(
        [("search", {"q": "a long query string to split into chunks"})],
        text="Looking it up now, please wait.",
    )
    fake.enqueue(reply, reply)
    c = client(fake)
    plain = create(c, [USER])
    deltas = []
    with c.messages.stream(model="claude-test", max_tokens=256, messages=[USER]) as stream:  # type: ignore[list-item]
        for event in stream:
            if event.type == "text":
                deltas.append(event.text)
        streamed = stream.get_final_message()
    assert len(deltas) > 1 and "".join(deltas) == "Looking it up now, please wait."
    assert streamed.model_dump(exclude={"usage"}) == plain.model_dump(exclude={"usage"})
    assert streamed.usage.output_tokens == plain.usage.output_tokens
    assert streamed.usage.input_tokens == plain.usage.input_tokens
    assert fake.requests[1].body is not None and fake.requests[1].body["stream"] is True


def test_stop_cuts_pending_requests_and_restart_keeps_the_port() -> None:
    fake = FakeAnthropic().start()
    port = fake.port
    fake.enqueue(delay(30, text("never")))
    c = client(fake)
    failure: list[BaseException] = []

    def call() -> None:
        try:
            create(c, [USER])
        except BaseException as exc:
            failure.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 3
    assert isinstance(failure[0], anthropic.APIConnectionError)
    with pytest.raises(anthropic.APIConnectionError):
        create(c, [USER])  # nothing listening

    fake.start()
    try:
        assert fake.port == port
        fake.enqueue(text("back"))
        assert text_of(create(client(fake), [USER])) == "back"
    finally:
        fake.stop()


def test_wait_for_requests_times_out(fake: FakeAnthropic) -> None:
    assert not fake.wait_for_requests(1, timeout=0.05)


def test_reset_forgets_everything(fake: FakeAnthropic) -> None:
    fake.enqueue(text("a"), text("b"))
    create(client(fake), [USER])
    fake.reset()
    assert (fake.request_count, fake.pending_replies) == (0, 0)


def test_sequential_requests_are_fast(fake: FakeAnthropic) -> None:
    """Nagle + delayed ACK would make this ~40 ms per request."""
    fake.responder = lambda body, i: text("ok")
    c = client(fake)
    create(c, [USER])  # connect, warm up
    started = time.monotonic()
    for _ in range(200):
        create(c, [USER])
    assert time.monotonic() - started < 2.0
    assert fake.request_count == 201


async def test_concurrent_requests(fake: FakeAnthropic) -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def respond(body: dict[str, Any], call_index: int) -> Any:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)  # hold the thread so requests overlap
        with lock:
            in_flight -= 1
        return text(f"reply {call_index}")

    fake.responder = respond
    c = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    messages = [{"role": "user", "content": f"task {n}"} for n in range(100)]
    replies = await asyncio.gather(
        *(c.messages.create(model="m", max_tokens=5, messages=[m]) for m in messages)  # type: ignore[list-item]
    )
    await c.close()
    assert len({text_of(r) for r in replies}) == 100
    assert fake.request_count == 100 and peak > 10


def test_reachable_from_another_process(fake: FakeAnthropic) -> None:
    fake.enqueue(text("from afar"))
    script = (
        "import json, os, urllib.request\n"
        "req = urllib.request.Request(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages',\n"
        "    data=json.dumps({'model': 'm', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'x'}]}).encode(),\n"
        "    headers={'x-api-key': os.environ['ANTHROPIC_API_KEY'], 'content-type': 'application/json'})\n"
        "print(json.loads(urllib.request.urlopen(req).read())['content'][0]['text'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=fake.env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "from afar", out.stderr
