"""The loop on an inline conversation (runs started before transcripts-v1); the transcript path is
covered with the store in transcript_steps_test.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kron.agent_core.loop import (
    CONTINUE_PROMPT,
    AgentLoop,
    BudgetReached,
    CallModel,
    Finish,
    RunLimits,
    RunTools,
)
from kron.agent_core.types import ModelRequest, ModelResponse, ToolResult, TranscriptRequest
from kron.contracts.models import RunError, RunStatus, StepKind


def reply(stop: str, *blocks: dict[str, Any], tokens: tuple[int, int] = (10, 5)) -> ModelResponse:
    return ModelResponse(content=list(blocks), stop_reason=stop, input_tokens=tokens[0],
                         output_tokens=tokens[1], model="claude-test")


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def tool_use(id_: str, name: str = "GITHUB_CREATE_ISSUE", **args: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": args}


def new_loop(**limits: Any) -> AgentLoop:
    return AgentLoop(RunLimits(model="claude-test", **limits), "triage my inbox")


def test_first_step_calls_the_model_with_the_goal() -> None:
    step = new_loop().next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest)
    assert step.request.messages == [{"role": "user", "content": "triage my inbox"}]
    assert step.request.model == "claude-test"


def test_tool_use_then_results_then_end_turn() -> None:
    loop = new_loop()
    loop.next_step()
    loop.record_model_response(reply("tool_use", text("looking"), tool_use("t1", x=1),
                                     tool_use("t2", name="GMAIL_FETCH_EMAILS")))
    step = loop.next_step()
    assert isinstance(step, RunTools)
    assert [c.id for c in step.calls] == ["t1", "t2"]
    assert step.calls[0].input == {"x": 1}

    loop.record_tool_results([
        ToolResult(tool_use_id="t2", content="boom", is_error=True),  # order must not matter
        ToolResult(tool_use_id="t1", content='{"ok": true}'),
    ])
    last = loop.state.messages[-1]
    assert last["role"] == "user"
    assert [b["tool_use_id"] for b in last["content"]] == ["t1", "t2"]
    assert "is_error" not in last["content"][0] and last["content"][1]["is_error"] is True

    assert isinstance(loop.next_step(), CallModel)
    loop.record_model_response(reply("end_turn", text("All done.")))
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.COMPLETED
    assert step.result.output == "All done."
    assert step.result.usage.model_calls == 2 and step.result.usage.tool_calls == 2
    assert step.result.usage.input_tokens == 20 and step.result.usage.output_tokens == 10
    kinds = [(s.kind, s.ok) for s in loop.state.steps]
    assert kinds == [(StepKind.MODEL, True), (StepKind.TOOL, True), (StepKind.TOOL, False),
                     (StepKind.MODEL, True)]
    assert loop.state.steps[2].error == "boom"


def test_missing_tool_result_is_rejected() -> None:
    loop = new_loop()
    loop.record_model_response(reply("tool_use", tool_use("t1"), tool_use("t2")))
    with pytest.raises(ValueError, match="t2"):
        loop.record_tool_results([ToolResult(tool_use_id="t1", content="x")])


def test_max_iterations_stops_a_model_that_keeps_calling_tools() -> None:
    loop = new_loop(max_iterations=2)
    for i in range(2):
        assert isinstance(loop.next_step(), CallModel)
        loop.record_model_response(reply("tool_use", tool_use(f"t{i}")))
        loop.next_step()
        loop.record_tool_results([ToolResult(tool_use_id=f"t{i}", content="ok")])
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.MAX_ITERATIONS
    assert step.result.turns == 2


def test_budget_is_checked_before_each_model_call() -> None:
    loop = new_loop(token_budget=30)
    loop.record_model_response(reply("tool_use", tool_use("a"), tokens=(20, 5)))
    loop.record_tool_results([ToolResult(tool_use_id="a", content="ok")])
    assert isinstance(loop.next_step(), CallModel)  # 25 < 30
    loop.record_model_response(reply("tool_use", tool_use("b"), tokens=(4, 1)))
    loop.record_tool_results([ToolResult(tool_use_id="b", content="ok")])
    step = loop.next_step()  # 30 >= 30
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.BUDGET_EXCEEDED
    assert step.result.error is not None and "30" in step.result.error.message


def test_max_tokens_is_continued_then_finished_with_what_there_is() -> None:
    loop = new_loop(max_continuations=1)
    loop.record_model_response(reply("max_tokens", text("part one, ")))
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest)
    assert step.request.messages[-1] == {"role": "user", "content": CONTINUE_PROMPT}
    loop.record_model_response(reply("max_tokens", text("part two")))
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.COMPLETED
    assert step.result.truncated is True
    assert step.result.output == "part one, part two"


def test_truncated_tool_use_is_never_executed() -> None:
    loop = new_loop(max_continuations=1)
    loop.record_model_response(reply("max_tokens", text("I'll open"), tool_use("cut", x=1)))
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest)
    assert all(b.get("type") != "tool_use"
               for m in step.request.messages if isinstance(m["content"], list)
               for b in m["content"])


def test_refusal_fails_the_run_with_a_clear_code() -> None:
    loop = new_loop()
    loop.record_model_response(reply("refusal"))
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.FAILED
    assert step.result.error is not None and step.result.error.code == "refused"


def test_pause_turn_sends_the_conversation_back() -> None:
    loop = new_loop()
    loop.record_model_response(reply("pause_turn", text("thinking")))
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest)
    assert step.request.messages[-1]["role"] == "assistant"


def test_cancel_stops_before_the_next_step_with_a_partial_result() -> None:
    loop = new_loop()
    loop.record_model_response(reply("tool_use", text("halfway"), tool_use("t1")))
    loop.request_cancel()
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.CANCELLED
    assert step.result.output == "halfway"


def test_checkpoint_between_model_and_tools_resumes_with_the_tool_calls() -> None:
    loop = new_loop()
    loop.record_model_response(reply("tool_use", tool_use("t1")))
    resumed = AgentLoop(loop.limits, "ignored", loop.state.model_copy(deep=True))
    step = resumed.next_step()
    assert isinstance(step, RunTools) and [c.id for c in step.calls] == ["t1"]


def test_fail_records_a_failed_model_step() -> None:
    loop = new_loop()
    result = loop.fail_model_call(RunError(code="model_bad_request", message="bad", status_code=400))
    assert result.status == RunStatus.FAILED
    assert loop.state.steps[-1].ok is False
    assert isinstance(loop.next_step(), Finish)


def test_fail_for_a_reason_that_is_no_step_records_no_step() -> None:
    loop = new_loop()
    result = loop.fail(RunError(code="outcome_unknown", message="aborted"))
    assert result.status == RunStatus.FAILED and result.error is not None
    assert result.error.code == "outcome_unknown"
    assert loop.state.steps == []


def _turn_with_result(loop: AgentLoop, call_id: str, content: str) -> None:
    loop.record_model_response(reply("tool_use", tool_use(call_id, name="GMAIL_FETCH_EMAILS")))
    assert isinstance(loop.next_step(), RunTools)
    loop.record_tool_results([ToolResult(tool_use_id=call_id, content=content)])


def test_a_request_over_the_size_limit_loses_its_oldest_tool_results_first() -> None:
    loop = new_loop(max_request_bytes=50_000)
    loop.next_step()
    sizes = []
    for i in range(6):  # 10 kB of results a turn: over the limit at the fifth
        _turn_with_result(loop, f"t{i}", f"email {i}: " + "x" * 10_000)
        step = loop.next_step()
        assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest)
        request = step.request
        sizes.append(len(request.model_dump_json().encode()))
    assert max(sizes) <= 50_000, sizes
    assert sizes[4] <= 50_000 * 0.75 < sizes[3] + 10_000  # cut back to 3/4 of the limit, once
    results = [m["content"][0]["content"] for m in request.messages if m["role"] == "user"
               and isinstance(m["content"], list)]
    elided = [r for r in results if r.startswith("[earlier tool result removed")]
    assert 1 <= len(elided) < 6
    assert results[: len(elided)] == elided  # the oldest went first
    assert results[-1].startswith("email 5: ")  # the newest is always kept whole
    assert "10009 characters" in elided[0]
    # What was cut stays cut (it is the run's state, and continue-as-new carries it).
    assert loop.state.messages == request.messages


def test_a_request_too_large_even_without_old_results_fails_the_run_clearly() -> None:
    loop = new_loop(max_request_bytes=5_000)
    loop.next_step()
    _turn_with_result(loop, "t0", "x" * 6_000)  # the newest result alone is over the limit
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status == RunStatus.FAILED
    assert step.result.error is not None and step.result.error.code == "conversation_too_large"
    assert "5000-byte limit" in step.result.error.message


def test_cache_tokens_add_up_per_run_and_show_per_model_step() -> None:
    loop = new_loop()
    loop.next_step()
    loop.record_model_response(ModelResponse(
        content=[tool_use("t1")], stop_reason="tool_use", input_tokens=3, output_tokens=7,
        cache_creation_input_tokens=1200, model="claude-test",
    ))
    loop.next_step()
    loop.record_tool_results([ToolResult(tool_use_id="t1", content="ok")])
    loop.next_step()
    loop.record_model_response(ModelResponse(
        content=[text("done")], stop_reason="end_turn", input_tokens=2, output_tokens=4,
        cache_read_input_tokens=1200, cache_creation_input_tokens=150, model="claude-test",
    ))
    usage = loop.state.usage
    assert (usage.input_tokens, usage.output_tokens) == (5, 11)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1200, 1350)
    first, tool, second = loop.state.steps
    assert (first.input_tokens, first.output_tokens, first.cache_read_input_tokens,
            first.cache_creation_input_tokens) == (3, 7, 0, 1200)
    assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (1200, 150)
    assert (tool.input_tokens, tool.cache_read_input_tokens) == (0, 0)


# ---- USD cost and budget --------------------------------------------------------------------


def priced(stop: str, *blocks: dict[str, Any], cost: float | None) -> ModelResponse:
    return reply(stop, *blocks).model_copy(update={"cost_usd": cost})


def test_cost_adds_up_per_call_and_per_run() -> None:
    loop = new_loop()
    loop.next_step()
    loop.record_model_response(priced("tool_use", tool_use("t1"), cost=0.25))
    loop.record_tool_results([ToolResult(tool_use_id="t1", content="ok")])
    loop.next_step()
    loop.record_model_response(priced("end_turn", text("done"), cost=0.5))
    assert loop.state.usage.cost_usd == 0.75
    assert [s.cost_usd for s in loop.state.steps] == [0.25, None, 0.5]
    assert loop.finished is not None and loop.finished.usage.cost_usd == 0.75


def test_an_unknown_cost_makes_the_run_cost_unknown_not_zero() -> None:
    loop = new_loop()
    loop.next_step()
    loop.record_model_response(priced("tool_use", tool_use("t1"), cost=0.25))
    loop.record_tool_results([ToolResult(tool_use_id="t1", content="ok")])
    loop.next_step()
    loop.record_model_response(priced("end_turn", text("done"), cost=None))
    assert loop.state.usage.cost_usd is None
    assert loop.state.steps[-1].cost_usd is None


def _spend(loop: AgentLoop, cost: float, call_id: str) -> None:
    step = loop.next_step()
    assert isinstance(step, CallModel), step
    loop.record_model_response(priced("tool_use", tool_use(call_id), cost=cost))
    loop.record_tool_results([ToolResult(tool_use_id=call_id, content="ok")])


def test_reaching_the_budget_asks_for_a_pause_before_the_next_call() -> None:
    loop = new_loop(budget_usd=1.0)
    _spend(loop, 0.6, "t1")
    _spend(loop, 0.5, "t2")  # 1.1 >= 1.0: the call in flight was allowed, the next one is not
    step = loop.next_step()
    assert step == BudgetReached(spent_usd=1.1, limit_usd=1.0)
    assert loop.finished is None  # not failed: the driver decides
    assert loop.next_step() == step  # still reached until the budget is raised


def test_a_raised_budget_lets_the_run_go_on() -> None:
    loop = new_loop(budget_usd=1.0)
    _spend(loop, 1.0, "t1")
    assert isinstance(loop.next_step(), BudgetReached)
    loop.set_budget_usd(2.0)
    assert isinstance(loop.next_step(), CallModel)


def test_over_budget_ends_as_budget_exceeded_with_a_partial_result() -> None:
    loop = new_loop(budget_usd=0.5)
    _spend(loop, 0.7, "t1")
    reached = loop.next_step()
    assert isinstance(reached, BudgetReached)
    result = loop.end_over_budget(reached, waited_seconds=60)
    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert result.error is not None and result.error.code == "budget_exceeded"
    assert "no higher budget within 60 s" in result.error.message
    assert result.usage.cost_usd == 0.7


def test_an_unknown_cost_cannot_keep_a_budget() -> None:
    loop = new_loop(budget_usd=1.0)
    _spend(loop, 0.1, "t1")
    step = loop.next_step()
    assert isinstance(step, CallModel)
    loop.record_model_response(priced("tool_use", tool_use("t2"), cost=None))
    loop.record_tool_results([ToolResult(tool_use_id="t2", content="ok")])
    step = loop.next_step()
    assert isinstance(step, Finish)
    assert step.result.status is RunStatus.FAILED
    assert step.result.error is not None and step.result.error.code == "cost_unknown"


def test_without_a_budget_there_is_no_money_check() -> None:
    loop = new_loop()
    _spend(loop, 1_000.0, "t1")
    assert isinstance(loop.next_step(), CallModel)


def _inline_messages(step: object) -> list[dict[str, Any]]:
    assert isinstance(step, CallModel) and isinstance(step.request, ModelRequest), step
    return step.request.messages


def test_the_soft_limit_tells_the_model_once_on_the_newest_user_message() -> None:
    loop = new_loop(budget_usd=1.0, budget_soft_limit=0.8)
    _spend(loop, 0.5, "t1")
    assert all("Wrap up" not in json.dumps(m) for m in _inline_messages(loop.next_step()))
    loop.record_model_response(priced("tool_use", tool_use("t2"), cost=0.35))  # 0.85: past 80 %
    loop.record_tool_results([ToolResult(tool_use_id="t2", content="ok")])
    messages = _inline_messages(loop.next_step())
    newest = messages[-1]
    assert newest["role"] == "user"
    assert newest["content"][0]["type"] == "tool_result"  # the tool result stays first
    assert "Wrap up" in newest["content"][-1]["text"] and "$0.8500" in newest["content"][-1]["text"]
    # Earlier messages are untouched (the cached prefix holds), and the note is not repeated.
    assert sum("Wrap up" in json.dumps(m) for m in messages) == 1
    loop.record_model_response(priced("tool_use", tool_use("t3"), cost=0.01))
    loop.record_tool_results([ToolResult(tool_use_id="t3", content="ok")])
    assert sum("Wrap up" in json.dumps(m) for m in _inline_messages(loop.next_step())) == 1


def test_the_soft_limit_note_turns_a_plain_goal_into_blocks() -> None:
    loop = AgentLoop(RunLimits(model="m", budget_usd=1.0), "goal",
                     state=None)
    loop.state.usage.cost_usd = 0.9
    messages = _inline_messages(loop.next_step())
    assert messages[0]["content"][0] == {"type": "text", "text": "goal"}
    assert "Wrap up" in messages[0]["content"][1]["text"]


def test_the_soft_limit_note_of_a_transcript_run_is_a_user_message_after_the_newest() -> None:
    loop = AgentLoop(RunLimits(model="m", budget_usd=1.0), "goal", transcript_id="run-1")
    loop.state.usage.cost_usd = 0.9
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
    goal, note = step.request.tail
    assert (goal.role, goal.content) == ("user", "goal")
    assert note.role == "user" and isinstance(note.content, str) and "Wrap up" in note.content
    step = loop.next_step()  # asked again (e.g. a retried call): the note is not added twice
    assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
    assert len(step.request.tail) == 2


def test_a_token_budget_counts_cached_input_too() -> None:
    loop = AgentLoop(RunLimits(model="m", token_budget=1000), "goal")
    loop.next_step()
    loop.record_model_response(ModelResponse(
        content=[tool_use("t1")], stop_reason="tool_use", input_tokens=10, output_tokens=10,
        cache_read_input_tokens=600, cache_creation_input_tokens=400,
    ))
    loop.record_tool_results([ToolResult(tool_use_id="t1", content="ok")])
    step = loop.next_step()
    assert isinstance(step, Finish) and step.result.status == RunStatus.BUDGET_EXCEEDED
