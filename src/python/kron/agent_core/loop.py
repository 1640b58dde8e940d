"""The Claude tool loop as a small, pure state machine.

`AgentLoop` holds the conversation and answers one question: what is the next step? It performs no
I/O, reads no clock and draws no randomness, so the Temporal workflow can drive it deterministically
(each step becomes one activity) and the in-process runner can drive it directly. Both feed the
outcome of each step back with `record_model_response` / `record_tool_results`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from kron.agent_core.pricing import add_costs
from kron.agent_core.types import ModelRequest, ModelResponse, ToolCall, ToolResult
from kron.contracts.models import (
    AgentRunResult,
    Conversation,
    RunError,
    RunProgress,
    RunStatus,
    StepKind,
    StepRecord,
)

DEFAULT_SYSTEM_PROMPT = (
    "You are kron, a background agent working on a user's goal with the user's own tools. "
    "Work step by step, call tools when they help, and finish with a concise summary of what you did."
)

# Sent when a reply was cut off at max_tokens and we ask the model to go on.
CONTINUE_PROMPT = "Your previous reply was cut off at the token limit. Continue exactly where you stopped."

# One model call carries the whole conversation, and Temporal refuses a payload over 2 MB (its blob
# size limit): a run whose request would be larger could never schedule its next step. Over this,
# the oldest tool results are shortened until the request is back under ELIDE_TO_FRACTION of it.
MAX_REQUEST_BYTES = 1_500_000
ELIDE_TO_FRACTION = 0.75
_ELIDED = "[earlier tool result removed to keep the conversation within its size limit: {} characters]"

# Added once to the newest user message when a run has spent its soft share of its USD budget. On
# the newest user message, not in the system prompt: the cached prompt prefix stays as it was.
BUDGET_NOTE = (
    "[kron: this run has used {spent} of its {limit} budget. Wrap up now: finish with the most useful "
    "result you can in as few further steps as possible.]"
)


@dataclass(frozen=True)
class RunLimits:
    model: str
    max_tokens: int = 4096
    max_iterations: int = 25  # model calls per run
    token_budget: int | None = None  # input + output tokens per run
    max_continuations: int = 2  # how often a max_tokens cut-off is continued before finishing
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_request_bytes: int = MAX_REQUEST_BYTES  # the JSON of one model request
    budget_usd: float | None = None  # USD per run: reached, the run pauses (BudgetReached)
    budget_soft_limit: float = 0.8  # share of budget_usd after which the model is told to wrap up


@dataclass(frozen=True)
class CallModel:
    request: ModelRequest


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

    def __init__(self, limits: RunLimits, goal: str, state: Conversation | None = None) -> None:
        self.limits = limits
        self.state = state if state is not None else Conversation(
            messages=[{"role": "user", "content": goal}]
        )
        self._pending_calls: list[ToolCall] = _tool_calls_awaiting_results(self.state.messages)
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
        )

    def partial_result(self, status: RunStatus) -> AgentRunResult:
        """The result so far, e.g. for a cancelled run or the `result` query of a live one."""
        return AgentRunResult(
            status=status,
            output=_last_assistant_text(self.state.messages),
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

    def model_request(self) -> ModelRequest:
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
                          response.duration_seconds, response=response)

        content = [b for b in response.content if not _is_empty_text(b)]
        stop = response.stop_reason
        if stop == "tool_use":
            calls = [
                ToolCall(id=b["id"], name=b["name"], input=b.get("input") or {})
                for b in content
                if b.get("type") == "tool_use"
            ]
            state.messages.append({"role": "assistant", "content": content})
            if calls:
                self._pending_calls = calls
                return
            # tool_use without tool calls: nothing to run; treat as a finished turn.
            self._finish(self._completed())
        elif stop == "max_tokens":
            # Never leave a truncated tool_use (its input JSON may be cut) in the conversation.
            text_only = [b for b in content if b.get("type") == "text"]
            if text_only:
                state.messages.append({"role": "assistant", "content": text_only})
            if state.continuations < self.limits.max_continuations:
                state.continuations += 1
                if not text_only:
                    state.messages.append({"role": "assistant", "content": "(cut off)"})
                state.messages.append({"role": "user", "content": CONTINUE_PROMPT})
            else:
                self._finish(self._completed(truncated=True))
        elif stop == "pause_turn":
            # The API paused a long turn; sending the conversation back resumes it.
            state.messages.append({"role": "assistant", "content": content})
        elif stop == "refusal":
            state.messages.append({"role": "assistant", "content": content or "(refused)"})
            self._finish(
                self.partial_result(RunStatus.FAILED).model_copy(
                    update={
                        "error": RunError(code="refused", message="the model declined this request"),
                        "output": _text_of(content).strip(),
                    }
                )
            )
        else:  # end_turn, stop_sequence, or anything new: the model is done
            state.messages.append({"role": "assistant", "content": content or "(no content)"})
            self._finish(self._completed())

    def record_tool_results(self, results: list[ToolResult]) -> None:
        """Feed back the results of the pending calls (one `tool_result` block per call, in order)."""
        by_id = {r.tool_use_id: r for r in results}
        missing = [c.id for c in self._pending_calls if c.id not in by_id]
        if missing:
            raise ValueError(f"no result for tool calls {missing}")
        blocks: list[dict[str, Any]] = []
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
            )
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": call.id,
                "content": result.content,
            }
            if result.is_error:
                block["is_error"] = True
            blocks.append(block)
        self.state.messages.append({"role": "user", "content": blocks})
        self._pending_calls = []

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
        newest = state.messages[-1] if state.messages else None
        if newest is None or newest.get("role") != "user":
            return False
        content = newest.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        blocks.append({"type": "text", "text": BUDGET_NOTE.format(spent=f"${spent:.4f}", limit=f"${budget:.4f}")})
        newest["content"] = blocks
        state.budget_note_sent = True
        return True

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
        return AgentRunResult(
            status=RunStatus.COMPLETED,
            output=_final_output(self.state.messages),
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
        )
        if response is not None:  # a model call: its own tokens and cost
            step.input_tokens, step.output_tokens = response.input_tokens, response.output_tokens
            step.cache_read_input_tokens = response.cache_read_input_tokens
            step.cache_creation_input_tokens = response.cache_creation_input_tokens
            step.cost_usd = response.cost_usd
        self.state.steps.append(step)


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
