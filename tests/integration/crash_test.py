"""A worker process SIGKILLed mid-run: another worker finishes the run from the last completed step.

The fake servers count every request, so the test proves what step-level durability promises: no
completed model call and no completed tool call is issued again; only the step in flight at the
moment of the kill may be (a model call here, which has no side effects).
"""

from __future__ import annotations

import json
import time

from kron.contracts import names
from kron.contracts.models import RunProgress, RunStatus
from kron_testing import fake_anthropic as replies
from kron_testing.temporal_server import TemporalDevServer

from .conftest import ANTHROPIC_KEY, COMPOSIO_KEY, WEBHOOK_SECRET, Stack, spawn_worker

TURNS = 8
KILL_AT_TURN = 4


async def test_sigkill_mid_run_resumes_on_another_worker_without_repeating_steps(
    stack: Stack, temporal_server: TemporalDevServer
) -> None:
    toolkit = stack.add_step_tool()
    script = replies.scripted_agent(TURNS, "NOTES_APPEND", parallel=2)
    # Turn KILL_AT_TURN's model call hangs, so the first worker dies with it in flight.
    stack.llm.responder = lambda body, i: (
        replies.delay(30, script(body, i))
        if replies.turn_of(body) == KILL_AT_TURN and i == KILL_AT_TURN
        else script(body, i)
    )
    first = spawn_worker(stack, temporal_server)
    try:
        handle = await stack.start_run(toolkits=[toolkit])
        await stack.wait_for_model_requests(KILL_AT_TURN + 1, timeout=60)
        executed_before_kill = stack.composio.execution_count()
        first.kill()
        killed_at = time.monotonic()
    finally:
        first.kill()

    second = spawn_worker(stack, temporal_server)
    try:
        result = await handle.result()
        resumed_after = time.monotonic() - killed_at
        progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    finally:
        second.terminate()
    print(f"kill -> run completed on the second worker: {resumed_after:.1f} s")

    assert result.status == RunStatus.COMPLETED
    assert result.turns == TURNS + 1
    assert executed_before_kill == KILL_AT_TURN * 2
    # Every turn was asked once, except the one in flight at the kill, asked exactly twice.
    by_turn = stack.llm.count_by_turn()
    assert by_turn == {t: (2 if t == KILL_AT_TURN else 1) for t in range(TURNS + 1)}
    # Every tool call ran exactly once.
    calls = [(e.arguments["turn"], e.arguments["call"]) for e in stack.composio.executions]
    assert sorted(calls) == [(t, c) for t in range(TURNS) for c in range(2)]
    # Resumed within heartbeat timeout + sticky-queue timeout + retry + new process start.
    assert resumed_after < 30
    assert progress.usage.model_calls == TURNS + 1


async def test_sigterm_drains_in_flight_steps_before_exiting(
    stack: Stack, temporal_server: TemporalDevServer
) -> None:
    toolkit = stack.add_step_tool()
    script = replies.scripted_agent(2, "NOTES_APPEND")
    # A model call slower than the drain grace (5 s) is handed back; a short one finishes.
    stack.llm.responder = lambda body, i: replies.delay(1.0, script(body, i))
    worker = spawn_worker(stack, temporal_server, KRON_LOG_LEVEL="INFO")
    handle = await stack.start_run(toolkits=[toolkit])
    await stack.wait_for_model_requests(1, timeout=30)
    exit_code = worker.terminate(timeout=30)
    assert exit_code == 0
    # The in-flight call completed during the drain rather than being abandoned.
    assert stack.llm.requests[0].status == 200

    second = spawn_worker(stack, temporal_server)
    try:
        result = await handle.result()
    finally:
        second.terminate()
    assert result.status == RunStatus.COMPLETED
    assert set(stack.llm.count_by_turn().values()) == {1}

    # The drained worker logged JSON lines bound to the run, and never a secret.
    lines = [json.loads(line) for line in worker.output if line.startswith("{")]
    step_lines = [line for line in lines if line.get("event") == "model call done"]
    assert step_lines and all(line["workflow_id"] == handle.id for line in step_lines)
    assert any(line.get("event") == "draining" for line in lines)
    output = "\n".join(worker.output)
    assert ANTHROPIC_KEY not in output and COMPOSIO_KEY not in output and WEBHOOK_SECRET not in output
