"""The transcript path (transcripts-v1) end to end in one process: the pure loop plus
`TranscriptSteps` on a real store must send the model exactly what the inline path sends, while
what the loop hands out per model call stays the same size however long the run is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kron.agent_core.loop import CONTINUE_PROMPT, AgentLoop, CallModel, Finish, RunLimits, RunTools
from kron.agent_core.transcript_steps import TranscriptSteps
from kron.agent_core.types import ModelRequest, ModelResponse, ToolResult, TranscriptRequest
from kron.common.transcripts import MemoryTranscriptStore, TranscriptMissing
from kron.contracts.models import Conversation, RunStatus

TOOLS = [{"name": "NOTES_READ", "description": "Read a note.", "input_schema": {"type": "object"}}]


def scripted(request: ModelRequest, turns: int, result_chars: int = 0) -> ModelResponse:
    """Tool calls for `turns` turns, then an answer; a pure function of the request."""
    turn = sum(1 for m in request.messages if m["role"] == "assistant")
    if turn >= turns:
        return ModelResponse(content=[{"type": "text", "text": f"done after {turn}"}], stop_reason="end_turn")
    calls = [{"type": "tool_use", "id": f"t{turn}-{i}", "name": "NOTES_READ", "input": {"turn": turn}}
             for i in range(2)]
    return ModelResponse(content=[{"type": "text", "text": ""}, *calls], stop_reason="tool_use")


def tool_output(call_id: str, size: int) -> str:
    return f"{call_id}:" + "x" * size


async def drive(
    loop: AgentLoop, steps: TranscriptSteps | None, turns: int, result_size: int = 100
) -> tuple[list[ModelRequest], list[Any], Finish]:
    sent: list[ModelRequest] = []  # what the model saw
    handed_out: list[Any] = []  # what the loop asked for (an activity input)
    loop.set_tools(TOOLS)
    while True:
        step = loop.next_step()
        if isinstance(step, Finish):
            return sent, handed_out, step
        if isinstance(step, CallModel):
            handed_out.append(step.request)
            if isinstance(step.request, TranscriptRequest):
                assert steps is not None
                prepared = await steps.prepare(step.request, "claude-test")
                sent.append(prepared.request)
                response = await steps.finish(prepared, scripted(prepared.request, turns))
            else:
                sent.append(step.request)
                response = scripted(step.request, turns)
            loop.record_model_response(response)
        elif isinstance(step, RunTools):
            results = [ToolResult(tool_use_id=c.id, content=tool_output(c.id, result_size)) for c in step.calls]
            transcript = loop.state.transcript
            if transcript is not None and steps is not None:
                results = [await steps.store_tool_result(transcript.id, r) for r in results]
            loop.record_tool_results(results)


def limits(**overrides: Any) -> RunLimits:
    return RunLimits(model="claude-test", max_iterations=500, **overrides)


async def test_the_model_sees_exactly_what_the_inline_path_sends() -> None:
    inline_sent, _, inline_end = await drive(AgentLoop(limits(), "read my notes"), None, 6)
    steps = TranscriptSteps(MemoryTranscriptStore())
    loop = AgentLoop(limits(), "read my notes", transcript_id="run-1")
    sent, _, end = await drive(loop, steps, 6)
    assert [r.model_dump() for r in sent] == [r.model_dump() for r in inline_sent]
    assert end.result == inline_end.result
    assert end.result.output == "done after 6"
    assert loop.state.messages == []  # no content in the workflow state


async def test_what_a_model_call_carries_does_not_grow_with_the_conversation() -> None:
    # A window wide enough for all of it: nothing is dropped.
    steps = TranscriptSteps(MemoryTranscriptStore(), context_window=lambda model: 10_000_000)
    loop = AgentLoop(limits(), "read my notes", transcript_id="run-2")
    sent, handed_out, _ = await drive(loop, steps, 60, result_size=20_000)
    sizes = [len(r.model_dump_json()) for r in handed_out]
    # The first call carries the goal, system prompt and tools; every later one the same few refs.
    later = sizes[2:]
    assert max(later) - min(later) < 50, later
    assert max(later) < 2_000
    assert len(sent[-1].model_dump_json()) > 60 * 2 * 20_000  # the model still got everything
    # Steps say what each produced, for progress.
    tool_steps = [s for s in loop.state.steps if s.kind.value == "tool"]
    assert tool_steps[0].preview is not None and tool_steps[0].preview.startswith("t0-0:xxx")


async def test_the_context_guard_drops_the_oldest_results_and_says_so() -> None:
    steps = TranscriptSteps(MemoryTranscriptStore(), context_window=lambda model: 30_000)
    loop = AgentLoop(limits(max_tokens=1000), "read my notes", transcript_id="run-3")
    sent, _, end = await drive(loop, steps, 12, result_size=10_000)
    assert end.result.status == RunStatus.COMPLETED
    for request in sent:  # every request fit: estimated tokens (chars/4) + max_tokens <= window
        assert len(request.model_dump_json()) / 4 + 1000 <= 30_000 * 1.02
    last = sent[-1].messages
    results = [b["content"] for m in last if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    dropped = [r for r in results if r.startswith("[earlier tool result removed")]
    assert dropped and results[: len(dropped)] == dropped  # the oldest went first
    assert not results[-1].startswith("[earlier") and not results[-2].startswith("[earlier")
    assert loop.state.transcript is not None
    note = loop.progress().context_note
    assert note is not None and f"oldest {loop.state.transcript.dropped_results} tool results" in note
    assert "30000-token context window" in note


async def test_a_request_too_large_even_without_old_results_fails_clearly() -> None:
    steps = TranscriptSteps(MemoryTranscriptStore(), context_window=lambda model: 5_000)
    loop = AgentLoop(limits(max_tokens=1000), "read my notes", transcript_id="run-4")
    _, _, end = await drive(loop, steps, 3, result_size=30_000)
    assert end.result.status == RunStatus.FAILED
    assert end.result.error is not None and end.result.error.code == "conversation_too_large"
    assert "characters/4" in end.result.error.message


async def test_a_checkpoint_resumes_with_its_pending_calls_and_references() -> None:
    steps = TranscriptSteps(MemoryTranscriptStore())
    loop = AgentLoop(limits(), "read my notes", transcript_id="run-5")
    loop.set_tools(TOOLS)
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
    prepared = await steps.prepare(step.request, "claude-test")
    loop.record_model_response(await steps.finish(prepared, scripted(prepared.request, 3)))
    checkpoint = Conversation.model_validate_json(loop.state.model_dump_json())
    resumed = AgentLoop(limits(), "read my notes", checkpoint)
    again = resumed.next_step()
    assert isinstance(again, RunTools) and [c.id for c in again.calls] == ["t0-0", "t0-1"]
    _, _, end = await drive(resumed, steps, 3)
    assert end.result.output == "done after 3"


async def test_max_tokens_continuations_join_into_the_answer() -> None:
    steps = TranscriptSteps(MemoryTranscriptStore())
    loop = AgentLoop(limits(), "write", transcript_id="run-6")
    replies = [
        ModelResponse(content=[{"type": "text", "text": "first half, "}], stop_reason="max_tokens"),
        ModelResponse(content=[{"type": "text", "text": "second half"}], stop_reason="end_turn"),
    ]
    sent: list[ModelRequest] = []
    for reply in replies:
        step = loop.next_step()
        assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
        prepared = await steps.prepare(step.request, "claude-test")
        sent.append(prepared.request)
        loop.record_model_response(await steps.finish(prepared, reply))
    assert sent[1].messages[-1] == {"role": "user", "content": CONTINUE_PROMPT}
    assert loop.finished is not None and loop.finished.output == "first half, second half"


async def test_a_missing_blob_is_reported_not_waited_for() -> None:
    store = MemoryTranscriptStore()
    steps = TranscriptSteps(store)
    loop = AgentLoop(limits(), "read my notes", transcript_id="run-7")
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
    prepared = await steps.prepare(step.request, "claude-test")
    loop.record_model_response(await steps.finish(prepared, scripted(prepared.request, 2)))
    await store.delete_run("run-7")
    loop.record_tool_results([ToolResult(tool_use_id=c.id, content="r") for c in loop.next_step().calls])  # type: ignore[union-attr]
    step = loop.next_step()
    assert isinstance(step, CallModel) and isinstance(step.request, TranscriptRequest)
    with pytest.raises(TranscriptMissing, match="run-7"):
        await steps.prepare(step.request, "claude-test")


def test_refs_cross_temporal_as_json() -> None:
    loop = AgentLoop(limits(), "goal", transcript_id="run-8")
    step = loop.next_step()
    assert isinstance(step, CallModel)
    assert json.loads(step.request.model_dump_json())["tail"][0]["content"] == "goal"
