"""A local server speaking the Anthropic Messages API wire protocol, for tests.

Point the real `anthropic` SDK at it with `base_url=fake.base_url`. It runs in a background thread
of the test process (a `ThreadingHTTPServer`, one thread per connection), so workers in other
processes can use it too.

    with FakeAnthropic(api_key="sk-test") as fake:
        fake.enqueue(tool_use([("search", {"q": "x"})]), text("done"))
        ...
        assert fake.count_by_turn() == {0: 1, 1: 1}

Replies come from the FIFO queue first, then from `responder(body, call_index)`. A responder sees
the whole request, so "which turn is this" is derivable from it (`turn_of`): a crash-and-resume test
gets the same reply for the same turn however many times it is asked.

Prompt caching: `cache_control` is always checked as the API checks it (at most 4 breakpoints, 1h
before 5m, none on thinking or empty text: else 400). With `prompt_cache=PromptCache()` the fake
also accounts the cache as the API does (see `kron_testing.prompt_cache`): `usage.input_tokens` is
then the request's uncached input, approximated from its characters (the reply's scripted
`input_tokens` is ignored), beside `cache_read_input_tokens` and `cache_creation_input_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from kron_testing.loopback import LoopbackHandler, LoopbackServer
from kron_testing.prompt_cache import CacheControlError, CachePlan, PromptCache, breakpoints

# --------------------------------------------------------------------------------------------
# Replies


@dataclass(frozen=True)
class MessageReply:
    """A 200 with a `message` body. `tool_use` blocks without an `id` get a deterministic one."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str
    input_tokens: int
    output_tokens: int
    stop_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class HttpReply:
    """Any status with a raw body (errors, malformed responses)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DelayReply:
    """Wait, then send `then`. Stopping the server cuts the wait short and drops the connection."""

    seconds: float
    then: Reply


@dataclass(frozen=True)
class DropReply:
    """Close the connection without sending a response."""


Reply: TypeAlias = MessageReply | HttpReply | DelayReply | DropReply
Responder: TypeAlias = Callable[[dict[str, Any], int], Reply]

DEFAULT_INPUT_TOKENS = 100
DEFAULT_OUTPUT_TOKENS = 20


def text(
    text: str,
    stop_reason: str = "end_turn",
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> MessageReply:
    return MessageReply(({"type": "text", "text": text},), stop_reason, input_tokens, output_tokens)


def tool_use(
    calls: Iterable[tuple[str, Mapping[str, Any]]],
    text: str | None = None,
    *,
    ids: Sequence[str] | None = None,
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> MessageReply:
    """Ask for tool calls `[(name, input), ...]`, optionally after some text.

    Without `ids`, each id is derived from the conversation and the turn (see `_tool_use_id`).
    """
    blocks: list[dict[str, Any]] = [] if text is None else [{"type": "text", "text": text}]
    for i, (name, tool_input) in enumerate(calls):
        block: dict[str, Any] = {"type": "tool_use", "name": name, "input": dict(tool_input)}
        if ids is not None:
            block["id"] = ids[i]
        blocks.append(block)
    return MessageReply(tuple(blocks), "tool_use", input_tokens, output_tokens)


def max_tokens(
    partial_text: str,
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> MessageReply:
    return text(partial_text, "max_tokens", input_tokens, output_tokens)


def refusal(
    partial_text: str = "",
    category: str | None = None,
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> MessageReply:
    content = ({"type": "text", "text": partial_text},) if partial_text else ()
    details = {"type": "refusal", "category": category, "explanation": None}
    return MessageReply(content, "refusal", input_tokens, output_tokens, details)


# The `error.type` (and a typical message) the real API uses for each status.
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource"),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes"),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def error(
    status: int,
    error_type: str | None = None,
    message: str | None = None,
    retry_after: float | str | None = None,
    retry_after_ms: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpReply:
    """An API error: `{"type": "error", "error": {"type": ..., "message": ...}}`.

    `retry_after` may be seconds or an HTTP date string; `retry_after_ms` is Anthropic's
    non-standard millisecond header.
    """
    default_type, default_message = ERROR_TYPES.get(status, ("api_error", f"HTTP {status}"))
    error_type = error_type or default_type
    body = {"type": "error", "error": {"type": error_type, "message": message or default_message}}
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = _number_or_text(retry_after)
    if retry_after_ms is not None:
        extra["retry-after-ms"] = _number_or_text(retry_after_ms)
    return HttpReply(status, json.dumps(body).encode(), tuple(extra.items()))


def raw(status: int, body: bytes | str, headers: Mapping[str, str] | None = None) -> HttpReply:
    data = body.encode() if isinstance(body, str) else body
    return HttpReply(status, data, tuple((headers or {}).items()))


def delay(seconds: float, then: Reply) -> DelayReply:
    return DelayReply(seconds, then)


def drop() -> DropReply:
    return DropReply()


def _number_or_text(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------------
# Content-based scripting


def turn_of(body: Mapping[str, Any]) -> int:
    """The number of assistant messages in the request: 0 for the first model call of a run."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def scripted_agent(
    turns: int,
    tool_name: str,
    tool_input_fn: Callable[[int, int], Mapping[str, Any]] | None = None,
    parallel: int = 1,
    final_text: str = "done",
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> Responder:
    """A responder for an agent that calls `tool_name` `parallel` times per turn for `turns` turns,
    then ends with `final_text`. `tool_input_fn(turn, index)` gives each call's input (default
    `{"turn": t, "call": i}`). A pure function of the request, so safe to call concurrently."""

    def respond(body: dict[str, Any], call_index: int) -> Reply:
        turn = turn_of(body)
        if turn >= turns:
            return text(final_text, input_tokens=input_tokens, output_tokens=output_tokens)
        calls = [
            (tool_name, tool_input_fn(turn, i) if tool_input_fn else {"turn": turn, "call": i})
            for i in range(parallel)
        ]
        return tool_use(calls, input_tokens=input_tokens, output_tokens=output_tokens)

    return respond


def _id_seed(body: Mapping[str, Any]) -> str:
    """What makes a model call "the same call": the conversation (system + first message) and the
    turn. A re-issued turn gets the same ids even if tool results changed in between; ids differ
    across turns and across conversations that start differently."""
    messages = body.get("messages") or [None]
    key = [body.get("system"), messages[0], turn_of(body)]
    return json.dumps(key, sort_keys=True, default=str)


def _derived_id(prefix: str, seed: str, suffix: str) -> str:
    return prefix + "01" + hashlib.sha256(f"{seed}|{suffix}".encode()).hexdigest()[:22]


# --------------------------------------------------------------------------------------------
# Request validation (a subset of the real API's, enough to catch broken conversations)


def _invalid_request(body: Any, check_conversation: bool) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tok = body.get("max_tokens")
    if not isinstance(max_tok, int) or isinstance(max_tok, bool) or max_tok < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    return _invalid_conversation(messages) if check_conversation else None


def _invalid_conversation(messages: list[Any]) -> str | None:
    """Every `tool_use` needs a `tool_result` in the next message and vice versa, as the API says."""
    seen_tool_ids: set[str] = set()
    pending: list[str] = []  # tool_use ids of the previous assistant message
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if not all(isinstance(b, dict) and "type" in b for b in blocks):
            return f"messages.{i}.content: each content block must be an object with a `type`"
        is_final_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not is_final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
        result_ids = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if pending:
            missing = [t for t in pending if t not in result_ids or message["role"] != "user"]
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
        unexpected = [t for t in result_ids if t not in pending]
        if unexpected:
            return (
                f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(map(str, unexpected))}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
        pending = []
        if message["role"] == "assistant":
            for block in blocks:
                if block.get("type") == "tool_use":
                    if block.get("id") in seen_tool_ids:
                        return f"messages.{i}: `tool_use` ids must be unique: {block.get('id')}"
                    seen_tool_ids.add(block.get("id"))
                    pending.append(block.get("id"))
    if pending:
        return (
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(pending)}"
        )
    return None


# --------------------------------------------------------------------------------------------
# The server


@dataclass
class RecordedRequest:
    """One `POST /v1/messages` the fake received."""

    index: int
    body: dict[str, Any] | None  # None when the body was not a JSON object
    headers: dict[str, str]  # lower-cased names
    received_at: float  # time.monotonic()
    request_id: str
    status: int | None = None  # None until answered, and for dropped connections
    responded_at: float | None = None
    # With a PromptCache: the usage this request was (or will be) answered with.
    usage: dict[str, Any] | None = None
    turn: int = field(init=False)

    def __post_init__(self) -> None:
        self.turn = turn_of(self.body) if self.body is not None else -1


class FakeAnthropic(LoopbackServer):
    """The server. Thread-safe; a responder runs in the request's thread (so it may block)."""

    def __init__(
        self,
        api_key: str = "sk-ant-fake-test-key",
        *,
        responder: Responder | None = None,
        port: int = 0,
        validate_conversation: bool = True,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        self.api_key = api_key
        self.prompt_cache = prompt_cache
        self.responder = responder  # used once the queue is empty; may be reassigned any time
        self.validate_conversation = validate_conversation
        self.responder_errors: list[BaseException] = []
        super().__init__(port)
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._changed = threading.Condition(self._lock)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess whose SDK client should use this fake."""
        return {"ANTHROPIC_BASE_URL": self.base_url, "ANTHROPIC_API_KEY": self.api_key}

    # --- scripting

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies, recorded requests and responder errors."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self.responder_errors.clear()

    # --- accounting

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._queue)

    turn_of = staticmethod(turn_of)

    def count_by_turn(self, status: int | None = None) -> dict[int, int]:
        """Turn -> number of requests for it (only those answered with `status`, if given)."""
        counts: dict[int, int] = {}
        for r in self.requests:
            if r.body is not None and (status is None or r.status == status):
                counts[r.turn] = counts.get(r.turn, 0) + 1
        return counts

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least `count` requests arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    # --- request handling (runs in the connection's thread)

    def _handle(self, handler: LoopbackHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        data = handler.rfile.read(length) if length else b""
        if handler.command != "POST" or handler.path.split("?", 1)[0] != "/v1/messages":
            self._send(handler, None, error(404, message=f"Not found: {handler.path}"), {})
            return
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        with self._changed:
            record = RecordedRequest(
                index=len(self._requests),
                body=body,
                headers={k.lower(): v for k, v in handler.headers.items()},
                received_at=time.monotonic(),
                request_id=f"req_fake{uuid.uuid4().hex[:20]}",
            )
            self._requests.append(record)
            self._changed.notify_all()
        plan: CachePlan | None = None
        started = self.prompt_cache.clock() if self.prompt_cache is not None else 0.0
        try:
            reply = self._reply_for(record, parsed)
            if self.prompt_cache is not None and isinstance(_final(reply), MessageReply):
                assert record.body is not None
                # Accounted as of the request's start; its entries land when the response begins.
                plan = self.prompt_cache.plan(record.body, workspace=self.api_key, started=started)
        except CacheControlError as exc:
            reply = error(400, message=str(exc))
        self._send(handler, record, reply, body or {}, plan)

    def _reply_for(self, record: RecordedRequest, parsed: Any) -> Reply:
        headers = record.headers
        if (
            headers.get("authorization") != f"Bearer {self.api_key}"
            and headers.get("x-api-key") != self.api_key
        ):
            return error(401, message="invalid x-api-key")
        problem = _invalid_request(parsed, check_conversation=self.validate_conversation)
        if problem is not None:
            return error(400, message=problem)
        assert record.body is not None
        breakpoints(record.body)  # raises CacheControlError for what the API rejects
        with self._lock:
            queued = self._queue.popleft() if self._queue else None
        if queued is not None:
            return queued
        if self.responder is None:
            return error(400, message=f"FakeAnthropic: no reply scripted for request {record.index}")
        try:
            return self.responder(record.body, record.index)
        except Exception as exc:  # surfaced to the test via responder_errors, not swallowed
            self.responder_errors.append(exc)
            return error(400, message=f"FakeAnthropic responder failed: {exc!r}")

    def _send(
        self,
        handler: LoopbackHandler,
        record: RecordedRequest | None,
        reply: Reply,
        body: dict[str, Any],
        plan: CachePlan | None = None,
    ) -> None:
        while isinstance(reply, DelayReply):
            if self._stopping.wait(reply.seconds):
                reply = DropReply()
            else:
                reply = reply.then
        request_id = record.request_id if record else f"req_fake{uuid.uuid4().hex[:20]}"
        if isinstance(reply, DropReply):
            handler.close_connection = True
            return
        if isinstance(reply, HttpReply):
            status, payload, content_type = reply.status, reply.body, "application/json"
            extra = reply.headers
        else:
            message = _render(reply, body)
            if plan is not None and self.prompt_cache is not None:
                message["usage"] = plan.usage.as_usage(reply.output_tokens)
                self.prompt_cache.commit(plan)  # the response begins: its entries are visible
            if record is not None:
                record.usage = message["usage"]
            status, content_type = 200, "application/json"
            payload = json.dumps(message).encode()
            if body.get("stream"):
                payload, content_type = _sse(message), "text/event-stream"
            extra = ()
        if record is not None:  # before writing: the client may look as soon as it has the reply
            record.responded_at = time.monotonic()
            record.status = status
        try:
            handler.send_response(status)
            if not any(name.lower() == "content-type" for name, _ in extra):
                handler.send_header("content-type", content_type)
            handler.send_header("content-length", str(len(payload)))
            handler.send_header("request-id", request_id)
            for name, value in extra:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client went away
            handler.close_connection = True


def _final(reply: Reply) -> Reply:
    while isinstance(reply, DelayReply):
        reply = reply.then
    return reply


def _render(reply: MessageReply, body: Mapping[str, Any]) -> dict[str, Any]:
    seed = _id_seed(body)
    content = []
    for i, block in enumerate(reply.content):
        if block["type"] == "tool_use" and "id" not in block:
            block = {"id": _derived_id("toolu_", seed, str(i)), **block}
        content.append(block)
    message: dict[str, Any] = {
        "id": _derived_id("msg_", seed, "message"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }
    if reply.stop_details is not None:
        message["stop_details"] = reply.stop_details
    return message


def _sse(message: dict[str, Any]) -> bytes:
    """The streaming event sequence for a complete message."""
    events: list[tuple[str, dict[str, Any]]] = []
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}  # the full input side, as the API does
    start.pop("stop_details", None)
    events.append(("message_start", {"type": "message_start", "message": start}))
    for i, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            empty = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in _chunks(json.dumps(block["input"]))
            ]
        else:
            empty = {**block, "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in _chunks(block["text"])]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": i, "content_block": empty})
        )
        for block_delta in deltas:
            event = {"type": "content_block_delta", "index": i, "delta": block_delta}
            events.append(("content_block_delta", event))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    delta: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    if "stop_details" in message:
        delta["stop_details"] = message["stop_details"]
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def _chunks(value: str, size: int = 16) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]
