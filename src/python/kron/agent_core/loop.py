"""The Claude tool loop as a small, pure state machine.

`AgentLoop` holds the conversation and answers one question: what is the next step? It performs no
I/O, reads no clock and draws no randomness, so the Temporal workflow can drive it deterministically
(each step becomes one activity) and the in-process runner can drive it directly. Both feed the
outcome of each step back with `record_model_response` / `record_tool_results`.

Two ways to hold the conversation:
- transcripts-v1 (`Conversation.transcript`, every new run): content lives in the transcript store;
  the loop holds references and sizes, and asks for `TranscriptRequest`s whose size does not grow
  with the conversation. A request that would not fit the model's context window loses its oldest
  tool results to a short note (decided from the sizes alone: tokens are estimated as characters/4).
- inline (`Conversation.messages`): the whole conversation in the state and in every request, cut
  at MAX_REQUEST_BYTES. Kept unchanged for runs started before transcripts-v1 (their histories
  replay through it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from kron.agent_core.pricing import add_costs
from kron.agent_core.types import (
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolResult,
    TranscriptRequest,
)
from kron.contracts.models import (
    DEFAULT_MAX_ITERATIONS,
    AgentRunResult,
    ContentRef,
    Conversation,
    PendingToolCall,
    RunError,
    RunProgress,
    RunStatus,
    StepKind,
    StepRecord,
    Transcript,
    TranscriptMessage,
    TranscriptToolResult,
)

DEFAULT_SYSTEM_PROMPT = (
    "You are kron, a background agent working on a user's goal with the user's own tools. "
    "Work step by step, call tools when they help, and finish with a concise summary of what you did."
)

# Sent when a reply was cut off at max_tokens and we ask the model to go on.
CONTINUE_PROMPT = "Your previous reply was cut off at the token limit. Continue exactly where you stopped."

# Inline conversations only (before transcripts-v1): one model call carries the whole conversation,
# and Temporal refuses a payload over 2 MB (its blob size limit): a run whose request would be larger
# could never schedule its next step. Over this, the oldest tool results are shortened until the
# request is back under ELIDE_TO_FRACTION of it.
MAX_REQUEST_BYTES = 1_500_000
ELIDE_TO_FRACTION = 0.75  # also the context guard's target (so it does not cut again every turn)
_ELIDED = "[earlier tool result removed to keep the conversation within its size limit: {} characters]"

# Added once to the newest user message when a run has spent its soft share of its USD budget. On
# the newest user message, not in the system prompt: the cached prompt prefix stays as it was.
BUDGET_NOTE = (
    "[kron: this run has used {spent} of its {limit} budget. Wrap up now: finish with the most useful "
    "result you can in as few further steps as possible.]"
)
# The context guard counts tokens as characters / 4 (Anthropic's rule of thumb for English text and
# JSON). An estimate, not a tokenizer: it only has to keep requests clear of the window.
CHARS_PER_TOKEN = 4
PREVIEW_CHARS = 120


@dataclass(frozen=True)
class RunLimits:
    model: str
    max_tokens: int = 4096
    max_iterations: int = DEFAULT_MAX_ITERATIONS  # model calls per run
    token_budget: int | None = None  # input + output tokens per run
    max_continuations: int = 2  # how often a max_tokens cut-off is continued before finishing
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_request_bytes: int = MAX_REQUEST_BYTES  # the JSON of one model request
    budget_usd: float | None = None  # USD per run: reached, the run pauses (BudgetReached)
    budget_soft_limit: float = 0.8  # share of budget_usd after which the model is told to wrap up


@dataclass(frozen=True)
class CallModel:
    request: TranscriptRequest | ModelRequest  # by reference (transcripts-v1), or inline


@dataclass(frozen=True)
class RunTools:
    calls: list[ToolCall]


@dataclass(frozen=True)
class Finish:
    result: AgentRunResult


@dataclass(frozen=True)
class BudgetReached:
    """The run has spent its USD budget: it must not call the model again until the budget is
    raised (`set_budget_usd`). What to do meanwhile (pause, give up) is the driver's call."""

    spent_usd: float
    limit_usd: float


Step = CallModel | RunTools | Finish | BudgetReached


class AgentLoop:
    """Decides the next step of one run from its conversation so far."""

    def __init__(
        self,
        limits: RunLimits,
        goal: str,
        state: Conversation | None = None,
        *,
        transcript_id: str | None = None,
    ) -> None:
        """A new run keeps its conversation in the transcript store under `transcript_id` (inline
        without one); a resumed run (`state`) the way it started."""
        self.limits = limits
        if state is not None:
            self.state = state
        elif transcript_id is not None:
            self.state = Conversation(transcript=Transcript(
                id=transcript_id,
                tail=[TranscriptMessage(role="user", content=goal)],
                system=limits.system_prompt,
                message_chars=_chars(goal),
            ))
        else:
            self.state = Conversation(messages=[{"role": "user", "content": goal}])
        transcript = self.state.transcript
        self._pending_calls: list[ToolCall] = (
            [ToolCall(**c.model_dump()) for c in transcript.pending_calls]
            if transcript is not None
            else _tool_calls_awaiting_results(self.state.messages)
        )
        self._finished: AgentRunResult | None = None
        self._cancel_requested = False

    # ---- reading the state -------------------------------------------------------------------
    @property
    def finished(self) -> AgentRunResult | None:
        return self._finished

    @property
    def status(self) -> RunStatus:
        return self._finished.status if self._finished else RunStatus.RUNNING

    def progress(self, status: RunStatus | None = None) -> RunProgress:
        return RunProgress(
            status=status or self.status,
            turns=self.state.turns,
            steps=list(self.state.steps),
            usage=self.state.usage.model_copy(),
            context_note=self._context_note(),
        )

    def partial_result(self, status: RunStatus) -> AgentRunResult:
        """The result so far, e.g. for a cancelled run or the `result` query of a live one."""
        transcript = self.state.transcript
        return AgentRunResult(
            status=status,
            output=(
                transcript.last_text
                if transcript is not None
                else _last_assistant_text(self.state.messages)
            ),
            usage=self.state.usage.model_copy(),
            turns=self.state.turns,
        )

    # ---- deciding ----------------------------------------------------------------------------
    def next_step(self) -> Step:
        if self._finished is not None:
            return Finish(self._finished)
        if self._cancel_requested:
            return self._finish(self.partial_result(RunStatus.CANCELLED))
        if self._pending_calls:
            return RunTools(list(self._pending_calls))
        budget = self.limits.token_budget
        if budget is not None and self.state.usage.total_tokens >= budget:
            return self._stop(RunStatus.BUDGET_EXCEEDED, RunError(
                code="budget_exceeded",
                message=f"token budget of {budget} used up ({self.state.usage.total_tokens} tokens)",
            ))
        money = self._budget_check()
        if money is not None:
            return money
        if self.state.turns >= self.limits.max_iterations:
            return self._stop(RunStatus.MAX_ITERATIONS, RunError(
                code="max_iterations",
                message=f"stopped after {self.state.turns} model calls "
                f"(max_iterations={self.limits.max_iterations})",
            ))
        if self.state.transcript is not None:
            self._add_budget_note()
            too_large = self._fit_context_window(self.state.transcript)
            return too_large or CallModel(self.transcript_request())
        request = self.model_request()
        size = _json_size(request.model_dump(mode="json"))
        if size > self.limits.max_request_bytes:
            size = self._elide_old_tool_results(size)
            if size > self.limits.max_request_bytes:
                return self._stop(RunStatus.FAILED, RunError(
                    code="conversation_too_large",
                    message=f"the next model request would be {size} bytes, over the "
                    f"{self.limits.max_request_bytes}-byte limit, even without earlier tool results",
                ))
            request = self.model_request()
        if self._add_budget_note():
            request = self.model_request()
        return CallModel(request)

    def transcript_request(self) -> TranscriptRequest:
        transcript = self.state.transcript
        assert transcript is not None
        return TranscriptRequest(
            transcript_id=transcript.id,
            turn=self.state.turns,
            model=self.limits.model,
            max_tokens=self.limits.max_tokens,
            system=transcript.system,
            tools=transcript.tools or self.state.tools,  # inline until the first call stores them
            head=transcript.head,
            tail=list(transcript.tail),
            drop_tool_results=transcript.dropped_results,
        )

    def model_request(self) -> ModelRequest:
        """The whole request of an inline conversation (before transcripts-v1)."""
        return ModelRequest(
            model=self.limits.model,
            max_tokens=self.limits.max_tokens,
            system=self.limits.system_prompt,
            messages=self.state.messages,
            tools=self.state.tools,
        )

    # ---- recording outcomes ------------------------------------------------------------------
    def set_tools(self, tools: list[dict[str, Any]]) -> None:
        self.state.tools = tools
        self.state.tools_loaded = True
        if self.state.transcript is not None:
            self.state.transcript.tools = None  # stored again (as a whole) by the next model call

    def set_budget_usd(self, budget_usd: float | None) -> None:
        """A new USD budget (a raised one resumes a run that reached the old one)."""
        self.limits = replace(self.limits, budget_usd=budget_usd)

    def request_cancel(self) -> None:
        """Graceful cancel: the run stops before its next step."""
        self._cancel_requested = True

    def record_model_response(self, response: ModelResponse) -> None:
        state = self.state
        state.turns += 1
        state.usage.model_calls += 1
        state.usage.input_tokens += response.input_tokens
        state.usage.output_tokens += response.output_tokens
        state.usage.cache_read_input_tokens += response.cache_read_input_tokens
        state.usage.cache_creation_input_tokens += response.cache_creation_input_tokens
        state.usage.cost_usd = add_costs(state.usage.cost_usd, response.cost_usd)
        self._record_step(StepKind.MODEL, response.model or self.limits.model, True, None,
                          response.duration_seconds, response=response,
                          preview=self._reply_preview(response))

        content = [b for b in response.content if not _is_empty_text(b)]
        stop = response.stop_reason
        kept = kept_reply_content(response.content, stop)
        self._append_reply(kept, response)
        if stop == "tool_use":
            calls = [
                ToolCall(id=b["id"], name=b["name"], input=b.get("input") or {})
                for b in content
                if b.get("type") == "tool_use"
            ]
            if calls:
                self._set_pending_calls(calls)
                return
            # tool_use without tool calls: nothing to run; treat as a finished turn.
            self._finish(self._completed())
        elif stop == "max_tokens":
            # Never leave a truncated tool_use (its input JSON may be cut) in the conversation.
            if state.continuations < self.limits.max_continuations:
                state.continuations += 1
                if kept is None:
                    self._append_text("assistant", "(cut off)")
                self._append_text("user", CONTINUE_PROMPT)
            else:
                self._finish(self._completed(truncated=True))
        elif stop == "pause_turn":
            pass  # the API paused a long turn; sending the conversation back resumes it
        elif stop == "refusal":
            self._finish(
                self.partial_result(RunStatus.FAILED).model_copy(
                    update={
                        "error": RunError(code="refused", message="the model declined this request"),
                        "output": _text_of(content).strip(),
                    }
                )
            )
        else:  # end_turn, stop_sequence, or anything new: the model is done
            self._finish(self._completed())

    def record_tool_results(self, results: list[ToolResult]) -> None:
        """Feed back the results of the pending calls (one `tool_result` block per call, in order)."""
        by_id = {r.tool_use_id: r for r in results}
        missing = [c.id for c in self._pending_calls if c.id not in by_id]
        if missing:
            raise ValueError(f"no result for tool calls {missing}")
        transcript = self.state.transcript
        blocks: list[dict[str, Any]] = []
        stored: list[TranscriptToolResult] = []
        for call in self._pending_calls:
            result = by_id[call.id]
            self.state.usage.tool_calls += 1
            self._record_step(
                StepKind.TOOL,
                call.name,
                not result.is_error,
                _first_line(result.content) if result.is_error else None,
                result.duration_seconds,
                outcome_unknown=result.outcome_unknown,
                preview=_preview(result.content) if transcript is not None else None,
            )
            if transcript is not None:
                content: ContentRef | str = result.content_ref or result.content
                stored.append(TranscriptToolResult(
                    tool_use_id=call.id, content=content, is_error=result.is_error
                ))
                chars = _ref_chars(content)
                transcript.tool_result_chars.append(chars)
                transcript.message_chars += chars
                continue
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": call.id,
                "content": result.content,
            }
            if result.is_error:
                block["is_error"] = True
            blocks.append(block)
        if transcript is not None:
            transcript.tail.append(TranscriptMessage(role="user", tool_results=stored))
            transcript.last_message_results = len(stored)
        else:
            self.state.messages.append({"role": "user", "content": blocks})
        self._set_pending_calls([])

    def fail_model_call(self, error: RunError) -> AgentRunResult:
        """End the run as failed because a model call cannot succeed (recorded as a failed step)."""
        self._record_step(StepKind.MODEL, self.limits.model, False, error.message, 0.0)
        return self.fail(error)

    def end_over_budget(self, reached: BudgetReached, waited_seconds: int | None = None) -> AgentRunResult:
        """End a run that reached its USD budget (no higher one came, or none can come)."""
        waited = f"; no higher budget within {waited_seconds} s" if waited_seconds is not None else ""
        return self._stop(RunStatus.BUDGET_EXCEEDED, RunError(
            code="budget_exceeded",
            message=f"USD budget of ${reached.limit_usd:.4f} reached (${reached.spent_usd:.4f} spent){waited}",
        )).result

    def fail(self, error: RunError) -> AgentRunResult:
        """End the run as failed for a reason that is not a step of its own (e.g. an abort)."""
        return self._stop(RunStatus.FAILED, error).result

    # ---- internals ---------------------------------------------------------------------------
    def _budget_check(self) -> Finish | BudgetReached | None:
        """The USD budget before a model call: reached, or impossible to keep (unknown cost)."""
        budget, spent = self.limits.budget_usd, self.state.usage.cost_usd
        if budget is None:
            return None
        if spent is None:
            # Counting an unknown cost as 0 could overspend without limit: stop instead.
            return self._stop(RunStatus.FAILED, RunError(
                code="cost_unknown",
                message="this run's budget_usd cannot be kept: the worker has no price for its "
                "model, so the cost of its calls is unknown",
            ))
        if spent >= budget:
            return BudgetReached(spent_usd=spent, limit_usd=budget)
        return None

    def _add_budget_note(self) -> bool:
        """Past the soft limit, tell the model once (in the newest user message) to wrap up."""
        budget, spent, state = self.limits.budget_usd, self.state.usage.cost_usd, self.state
        if budget is None or spent is None or state.budget_note_sent or spent < budget * self.limits.budget_soft_limit:
            return False
        note = BUDGET_NOTE.format(spent=f"${spent:.4f}", limit=f"${budget:.4f}")
        transcript = state.transcript
        if transcript is not None:
            # A user message of its own after the newest one (the API joins consecutive user
            # messages into one turn); the stored chain before it, the cached prefix, stays as it was.
            if not transcript.tail or transcript.tail[-1].role != "user":
                return False
            transcript.tail.append(TranscriptMessage(role="user", content=note))
            transcript.message_chars += _chars(note)
            state.budget_note_sent = True
            return True
        newest = state.messages[-1] if state.messages else None
        if newest is None or newest.get("role") != "user":
            return False
        content = newest.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        blocks.append({"type": "text", "text": note})
        newest["content"] = blocks
        state.budget_note_sent = True
        return True

    def _append_reply(self, kept: list[dict[str, Any]] | str | None, response: ModelResponse) -> None:
        """Add the reply (as the conversation keeps it) to the conversation."""
        transcript = self.state.transcript
        if transcript is None:
            if kept is not None:
                self.state.messages.append({"role": "assistant", "content": kept})
            return
        update = response.transcript
        if update is None:
            raise ValueError("a transcript run got a model response without its transcript update")
        # The call linked the tail and the reply into the stored chain.
        transcript.head = update.head
        transcript.tail = []
        transcript.system = update.system
        transcript.tools = update.tools
        transcript.context_window_tokens = update.context_window_tokens
        if update.reply is not None:
            transcript.message_chars += update.reply.chars
            transcript.last_message_results = 0
        text = _text_of(response.content, separator="")
        transcript.answer = transcript.answer + text if transcript.continuing else text
        transcript.continuing = False
        if _text_of(response.content).strip():
            transcript.last_text = _text_of(response.content).strip()

    def _append_text(self, role: Literal["user", "assistant"], text: str) -> None:
        """A short message kron itself writes (a continuation prompt)."""
        transcript = self.state.transcript
        if transcript is None:
            self.state.messages.append({"role": role, "content": text})
            return
        transcript.tail.append(TranscriptMessage(role=role, content=text))
        transcript.message_chars += _chars(text)
        transcript.last_message_results = 0
        if role == "assistant":
            transcript.answer += text
        else:
            transcript.continuing = True

    def _set_pending_calls(self, calls: list[ToolCall]) -> None:
        self._pending_calls = calls
        if self.state.transcript is not None:  # a checkpoint resumes with them
            self.state.transcript.pending_calls = [PendingToolCall(**c.model_dump()) for c in calls]

    def _estimated_tokens(self, transcript: Transcript) -> int:
        tools = transcript.tools.chars if transcript.tools is not None else _chars(self.state.tools)
        chars = _ref_chars(transcript.system) + tools + transcript.message_chars
        return -(-chars // CHARS_PER_TOKEN)

    def _fit_context_window(self, transcript: Transcript) -> Finish | None:
        """Keep the next request (and its reply) within the model's context window: drop the
        oldest tool results, never the newest message's, until it is at most ELIDE_TO_FRACTION of
        the room (so this does not happen again every turn). The model sees a note of what went;
        progress says so. Pure, from the sizes alone: a replay drops exactly the same."""
        room = transcript.context_window_tokens - self.limits.max_tokens
        if self._estimated_tokens(transcript) <= room:
            return None
        target = int(room * ELIDE_TO_FRACTION)
        droppable = len(transcript.tool_result_chars) - transcript.last_message_results
        while transcript.dropped_results < droppable and self._estimated_tokens(transcript) > target:
            chars = transcript.tool_result_chars[transcript.dropped_results]
            transcript.message_chars += _chars(dropped_result_note(chars)) - chars
            transcript.dropped_chars += chars
            transcript.dropped_results += 1
        estimate = self._estimated_tokens(transcript)
        if estimate <= room:
            return None
        return self._stop(RunStatus.FAILED, RunError(
            code="conversation_too_large",
            message=f"the next model request would be about {estimate} tokens (characters/4), over "
            f"the {room} the model's {transcript.context_window_tokens}-token context window leaves "
            f"beside max_tokens={self.limits.max_tokens}, even without earlier tool results",
        ))

    def _context_note(self) -> str | None:
        transcript = self.state.transcript
        if transcript is None or not transcript.dropped_results:
            return None
        return (
            f"the oldest {transcript.dropped_results} tool results ({transcript.dropped_chars} "
            f"characters) were left out of the model's view, each replaced by a short note, to fit "
            f"its {transcript.context_window_tokens}-token context window (estimated as characters/4)"
        )

    def _reply_preview(self, response: ModelResponse) -> str | None:
        if self.state.transcript is None:
            return None
        text = _text_of(response.content).strip()
        calls = [str(b.get("name")) for b in response.content if b.get("type") == "tool_use"]
        return _preview(text) if text else (f"tool calls: {', '.join(calls)}" if calls else "")

    def _elide_old_tool_results(self, size: int) -> int:
        """Shorten tool results, oldest first and never the newest message's, until the request is
        at most ELIDE_TO_FRACTION of the limit (so this does not happen again every turn). The model
        is told what was removed. Returns the new size. Pure: the same conversation is always cut
        the same way, so a replayed run cuts it as the original did."""
        target = int(self.limits.max_request_bytes * ELIDE_TO_FRACTION)
        for message in self.state.messages[:-1]:
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, list):
                continue
            for block in content:
                result = block.get("content") if isinstance(block, dict) else None
                if block.get("type") != "tool_result" or not isinstance(result, str):
                    continue
                replacement = _ELIDED.format(len(result))
                if len(result) <= len(replacement):
                    continue
                size -= _json_size(result) - _json_size(replacement)
                block["content"] = replacement
                if size <= target:
                    return size
        return size

    def _completed(self, truncated: bool = False) -> AgentRunResult:
        transcript = self.state.transcript
        return AgentRunResult(
            status=RunStatus.COMPLETED,
            output=(
                transcript.answer.strip() or transcript.last_text
                if transcript is not None
                else _final_output(self.state.messages)
            ),
            truncated=truncated,
            usage=self.state.usage.model_copy(),
            turns=self.state.turns,
        )

    def _stop(self, status: RunStatus, error: RunError) -> Finish:
        """End the run early: the result so far, with why."""
        return self._finish(self.partial_result(status).model_copy(update={"error": error}))

    def _finish(self, result: AgentRunResult) -> Finish:
        self._finished = result
        return Finish(result)

    def _record_step(
        self,
        kind: StepKind,
        name: str,
        ok: bool,
        error: str | None,
        duration: float,
        *,
        outcome_unknown: bool = False,
        response: ModelResponse | None = None,
        preview: str | None = None,
    ) -> None:
        step = StepRecord(
            index=len(self.state.steps),
            kind=kind,
            turn=self.state.turns,
            name=name,
            ok=ok,
            error=error,
            duration_seconds=round(duration, 6),
            outcome_unknown=outcome_unknown,
            preview=preview,
        )
        if response is not None:  # a model call: its own tokens and cost
            step.input_tokens, step.output_tokens = response.input_tokens, response.output_tokens
            step.cache_read_input_tokens = response.cache_read_input_tokens
            step.cache_creation_input_tokens = response.cache_creation_input_tokens
            step.cost_usd = response.cost_usd
        self.state.steps.append(step)


def kept_reply_content(
    content: list[dict[str, Any]], stop_reason: str | None
) -> list[dict[str, Any]] | str | None:
    """A reply's content as the conversation keeps it (None: the reply adds no message)."""
    content = [b for b in content if not _is_empty_text(b)]
    if stop_reason in ("tool_use", "pause_turn"):
        return content
    if stop_reason == "max_tokens":
        # Never keep a truncated tool_use (its input JSON may be cut).
        return [b for b in content if b.get("type") == "text"] or None
    if stop_reason == "refusal":
        return content or "(refused)"
    return content or "(no content)"


def dropped_result_note(chars: int) -> str:
    """What the model sees instead of a tool result the context guard dropped."""
    return _ELIDED.format(chars)


def canonical_json(value: Any) -> str:
    """The one text form of stored content (and of sizes: `ContentRef.chars` is its length)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def preview_of(value: Any) -> str:
    if isinstance(value, str):
        return _preview(value)
    if isinstance(value, list):
        text = _text_of([b for b in value if isinstance(b, dict)]).strip()
        return _preview(text or canonical_json(value))
    return _preview(canonical_json(value))


def _preview(text: str) -> str:
    return text[:PREVIEW_CHARS]


def _chars(value: Any) -> int:
    return len(canonical_json(value))


def _ref_chars(content: ContentRef | str | None) -> int:
    if content is None:
        return 0
    return content.chars if isinstance(content, ContentRef) else _chars(content)


def _tool_calls_awaiting_results(messages: list[dict[str, Any]]) -> list[ToolCall]:
    """Tool calls of a trailing assistant message (a checkpoint taken between model and tools)."""
    if not messages or messages[-1].get("role") != "assistant":
        return []
    content = messages[-1].get("content")
    if not isinstance(content, list):
        return []
    return [
        ToolCall(id=b["id"], name=b["name"], input=b.get("input") or {})
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _is_empty_text(block: dict[str, Any]) -> bool:
    # The API rejects empty text blocks when they are sent back.
    return block.get("type") == "text" and not str(block.get("text", "")).strip()


def _text_of(content: list[dict[str, Any]] | str, separator: str = "\n") -> str:
    if isinstance(content, str):
        return content
    return separator.join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def _last_assistant_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant":
            text = _text_of(message.get("content") or "").strip()
            if text:
                return text
    return ""


def _final_output(messages: list[dict[str, Any]]) -> str:
    """The answer of the last turn, stitched together across max_tokens continuations."""
    parts: list[str] = []
    for message in reversed(messages):
        if message.get("role") == "assistant":
            parts.append(_text_of(message.get("content") or "", separator=""))
        elif message.get("content") != CONTINUE_PROMPT:
            break
    text = "".join(reversed(parts)).strip()
    return text or _last_assistant_text(messages)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
