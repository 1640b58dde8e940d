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
from kron_testing.prompt_cache import PromptCache, approx_tokens, breakpoints, min_cacheable_tokens

USER = {"role": "user", "content": "hello"}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-fake-123") as server:
        yield server


def client(fake: FakeAnthropic, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, **kwargs)


def create(c: anthropic.Anthropic, messages: list[dict[str, Any]], **kwargs: Any) -> anthropic.types.Message:
    kwargs.setdefault("model", "claude-test")
    return c.messages.create(max_tokens=256, messages=messages, **kwargs)  # type: ignore[arg-type]


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


# ---- prompt caching (kron_testing.prompt_cache), through the SDK

CC = {"type": "ephemeral"}
CC_1H = {"type": "ephemeral", "ttl": "1h"}
LONG = "word " * 1000  # 5,000 characters: about 1,250 tokens, over the default minimum of 1,024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> PromptCache:
    return PromptCache(clock=clock)


@pytest.fixture
def caching(cache: PromptCache) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-fake-123", prompt_cache=cache) as server:
        server.responder = lambda body, i: text("ok", output_tokens=3)
        yield server


def usage(c: anthropic.Anthropic, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[int, int, int]:
    """(read, written, uncached) of one request."""
    u = create(c, messages, **kwargs).usage
    assert u.cache_read_input_tokens is not None and u.cache_creation_input_tokens is not None
    assert u.cache_creation is not None
    assert u.cache_creation_input_tokens == (
        u.cache_creation.ephemeral_5m_input_tokens + u.cache_creation.ephemeral_1h_input_tokens
    )
    return u.cache_read_input_tokens, u.cache_creation_input_tokens, u.input_tokens


def msg(role: str, text_: str, cache_control: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text_}
    if cache_control is not None:
        block["cache_control"] = cache_control
    return {"role": role, "content": [block]}


def tokens(*blocks: Any) -> int:
    """The fake's size of these blocks (their breakpoints are not part of them)."""
    return sum(approx_tokens({k: v for k, v in b.items() if k != "cache_control"}) for b in blocks)


def test_worked_example_reads_the_previous_turn_and_writes_the_new_one(caching: FakeAnthropic) -> None:
    """The docs' table: [S, U1, A1, U2*] writes all; [.., U2, A2, U3*] reads S..U2, writes A2+U3."""
    c = client(caching)
    system = [{"type": "text", "text": LONG}]
    u1, a1, u2 = msg("user", "first question"), msg("assistant", "first answer"), msg("user", "second")
    size = tokens(*system, *(m["content"][0] for m in (u1, a1, u2)))
    assert usage(c, [u1, a1, msg("user", "second", CC)], system=system) == (0, size, 0)
    a2, u3 = msg("assistant", "second answer"), msg("user", "third", CC)
    grown = tokens(a2["content"][0], u3["content"][0])
    assert usage(c, [u1, a1, u2, a2, u3], system=system) == (size, grown, 0)
    # Without any breakpoint: nothing read or written, all of it is input.
    assert usage(c, [u1, a1, u2, a2, msg("user", "third")], system=system) == (0, 0, size + grown)


def test_below_the_model_minimum_nothing_is_cached(caching: FakeAnthropic) -> None:
    c = client(caching)
    short = [msg("user", "word " * 700, CC)]  # ~875 tokens
    size = tokens(short[0]["content"][0])
    assert usage(c, short) == (0, 0, size)  # default minimum 1,024: no error, no cache
    assert usage(c, short, model="claude-opus-5") == (0, size, 0)  # 512
    assert usage(c, short, model="claude-opus-5") == (size, 0, 0)
    long = [msg("user", "word " * 3000, CC)]  # ~3,750 tokens: under Haiku 4.5's 4,096
    assert usage(c, long, model="claude-haiku-4-5-20251001")[0:2] == (0, 0)
    assert min_cacheable_tokens("claude-sonnet-5") == 1024
    assert min_cacheable_tokens("claude-opus-4-6") == 4096 and min_cacheable_tokens("claude-opus-4") == 1024


def test_lookback_covers_20_blocks_and_only_breakpoint_positions_are_written(caching: FakeAnthropic) -> None:
    c = client(caching)
    blocks = [{"type": "text", "text": LONG}] + [{"type": "text", "text": f"b{i}"} for i in range(40)]

    def at(*marked: int) -> list[dict[str, Any]]:
        content = [{**b, "cache_control": CC} if i in marked else b for i, b in enumerate(blocks)]
        return [{"role": "user", "content": content}]

    upto = [tokens(*blocks[: i + 1]) for i in range(len(blocks))]
    assert usage(c, at(15)) == (0, upto[15], upto[-1] - upto[15])
    assert usage(c, at(35)) == (0, upto[35], upto[-1] - upto[35])  # 15 lies outside 35..16: a miss
    assert usage(c, at(34))[0] == upto[15]  # 34..15 reaches it
    # 16 was never a breakpoint: its prefix was not written on the way to 34 or 35.
    assert usage(c, at(16)) == (upto[15], upto[16] - upto[15], upto[-1] - upto[16])
    # The highest hit over all breakpoints counts; writes are only the breakpoints beyond it.
    assert usage(c, at(15, 35, 40)) == (upto[35], upto[40] - upto[35], 0)


def test_ttl_counts_from_the_request_start_and_hits_refresh_it(caching: FakeAnthropic, clock: Clock) -> None:
    c = client(caching)
    request = [msg("user", LONG, CC)]
    size = tokens(request[0]["content"][0])

    def slow(body: dict[str, Any], i: int) -> Any:
        clock.now += 100  # the response takes 100 s: the entry still expires 300 s after the start
        return text("ok")

    caching.responder = slow
    assert usage(c, request) == (0, size, 0)  # written at 1000 (expires 1300); now 1100
    caching.responder = lambda body, i: text("ok")
    clock.now = 1299
    assert usage(c, request) == (size, 0, 0)  # a hit refreshes: expires 1599
    clock.now = 1598
    assert usage(c, request) == (size, 0, 0)
    clock.now = 1898 + 1
    assert usage(c, request) == (0, size, 0)  # expired


def test_1h_entries_live_an_hour_and_must_come_before_5m_ones(caching: FakeAnthropic, clock: Clock) -> None:
    c = client(caching)
    system = [{"type": "text", "text": LONG, "cache_control": CC_1H}]
    tail = [msg("user", LONG, CC)]
    s, t = tokens(system[0]), tokens(tail[0]["content"][0])
    u = create(c, tail, system=system).usage
    assert u.cache_creation is not None
    assert (u.cache_creation.ephemeral_1h_input_tokens, u.cache_creation.ephemeral_5m_input_tokens) == (s, t)
    clock.now += 1000
    assert usage(c, tail, system=system) == (s, t, 0)  # the 1h system survives, the 5m tail does not
    with pytest.raises(anthropic.BadRequestError, match="ttl='1h'.*must not come after.*ttl='5m'"):
        create(c, [msg("user", LONG, CC_1H)], system=[{**system[0], "cache_control": CC}])


def test_at_most_4_breakpoints_and_none_on_thinking_or_empty_text(caching: FakeAnthropic) -> None:
    c = client(caching)
    five = [{"role": "user", "content": [{"type": "text", "text": f"b{i}", "cache_control": CC} for i in range(5)]}]
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        create(c, five)
    assert exc_info.value.api_message == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )
    thinking = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "s", "cache_control": CC}]}
    with pytest.raises(anthropic.BadRequestError, match="thinking.cache_control"):
        create(c, [USER, thinking])
    with pytest.raises(anthropic.BadRequestError, match="empty text"):
        create(c, [msg("user", " ", CC)])
    # Checked without a PromptCache too: what the API rejects, the plain fake rejects.
    with FakeAnthropic() as plain:
        plain.responder = lambda body, i: text("ok")
        with pytest.raises(anthropic.BadRequestError, match="A maximum of 4"):
            create(client(plain), five)


def test_automatic_caching_marks_the_last_cacheable_block(caching: FakeAnthropic) -> None:
    c = client(caching)
    request = [msg("user", LONG), {"role": "assistant", "content": [
        {"type": "text", "text": "answer"}, {"type": "thinking", "thinking": "x", "signature": "s"}]}]
    size = tokens(request[0]["content"][0], request[1]["content"][0])
    assert usage(c, request, extra_body={"cache_control": CC}) == (0, size, tokens(request[1]["content"][1]))
    assert breakpoints({**{"messages": request}, "cache_control": CC}) == [("messages.1.content.0", "5m")]
    four = [{"role": "user", "content": [{"type": "text", "text": f"b{i}", "cache_control": CC} for i in range(4)]}]
    with pytest.raises(anthropic.BadRequestError, match="automatic caching"):
        create(c, [*four, msg("assistant", "x")], extra_body={"cache_control": CC})


def test_the_prefix_key_covers_model_workspace_tools_and_settings(caching: FakeAnthropic, cache: PromptCache) -> None:
    c = client(caching)
    tools = [{"name": n, "description": LONG, "input_schema": {"type": "object"}} for n in ("a", "b")]
    marked = [tools[0], {**tools[1], "cache_control": CC}]
    conversation = [msg("user", LONG, CC)]
    t = tokens(*tools)
    whole = t + tokens(conversation[0]["content"][0])
    assert usage(c, conversation, tools=marked) == (0, whole, 0)
    assert usage(c, conversation, tools=marked) == (whole, 0, 0)
    # tool_choice invalidates the messages only; "auto" is the default, said out loud.
    assert usage(c, conversation, tools=marked, tool_choice={"type": "auto"}) == (whole, 0, 0)
    assert usage(c, conversation, tools=marked, tool_choice={"type": "any"})[0:2] == (t, whole - t)
    # Reordered tools: a different prefix from the first block on.
    assert usage(c, conversation, tools=[tools[1], {**tools[0], "cache_control": CC}])[0] == 0
    assert usage(c, conversation, tools=marked, model="claude-other")[0] == 0
    # Another workspace (API key) sharing the same cache store sees none of it.
    with FakeAnthropic(api_key="sk-ant-other", prompt_cache=cache) as other:
        other.responder = lambda body, i: text("ok")
        assert usage(client(other), conversation, tools=marked)[0] == 0


def test_entries_are_visible_once_the_response_begins(caching: FakeAnthropic) -> None:
    """Two identical cold requests in flight at once both write; the next one reads."""
    first_arrived = threading.Event()

    def respond(body: dict[str, Any], i: int) -> Any:
        if i == 0:
            first_arrived.set()
            return delay(0.5, text("ok"))
        return text("ok")

    caching.responder = respond
    request = [msg("user", LONG, CC)]
    size = tokens(request[0]["content"][0])
    results: list[tuple[int, int, int]] = []
    slow = threading.Thread(target=lambda: results.append(usage(client(caching), request)))
    slow.start()
    assert first_arrived.wait(5)
    assert usage(client(caching), request) == (0, size, 0)  # the first has not begun its response
    slow.join(5)
    assert results == [(0, size, 0)]
    assert usage(client(caching), request) == (size, 0, 0)


def test_streaming_carries_the_cache_usage(caching: FakeAnthropic) -> None:
    c = client(caching)
    request = [msg("user", LONG, CC)]
    create(c, request)
    with c.messages.stream(model="claude-test", max_tokens=256, messages=request) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == tokens(request[0]["content"][0])
    assert caching.requests[-1].usage == final.usage.model_dump(include=set(caching.requests[-1].usage or {}))
