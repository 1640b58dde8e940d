from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kron.contracts.models import (
    AgentRunResult,
    RunError,
    RunProgress,
    RunStatus,
    StepKind,
    StepRecord,
    Usage,
)
from kron.gateway.schemas import ExecutionState, TaskSummary
from kron.gateway.task_view import needs_result, task_view

STEP = StepRecord(index=0, kind=StepKind.MODEL, turn=1, name="claude", ok=True)


def summary(state: ExecutionState) -> TaskSummary:
    return TaskSummary(task_id="run-1", execution_status=state, created_at=datetime(2030, 1, 1, tzinfo=UTC),
                       goal="g", toolkits=["github"])


def progress(status: RunStatus, turns: int = 2) -> RunProgress:
    return RunProgress(status=status, turns=turns, steps=[STEP], usage=Usage(input_tokens=5))


def result(status: RunStatus, turns: int = 3) -> AgentRunResult:
    return AgentRunResult(status=status, output="done", usage=Usage(input_tokens=9), turns=turns,
                          error=RunError(code="budget", message="over") if status is RunStatus.BUDGET_EXCEEDED else None)


def test_queued_says_queued_and_nothing_else() -> None:
    view = task_view(summary(ExecutionState.RUNNING), queued=True, progress=None, result=None)
    assert (view.status, view.live, view.steps, view.goal) == (RunStatus.QUEUED, False, [], "g")


def test_a_running_task_is_what_its_progress_says_or_running_without_an_answer() -> None:
    waiting = task_view(summary(ExecutionState.RUNNING), queued=False, progress=progress(RunStatus.WAITING), result=None)
    assert (waiting.status, waiting.live, waiting.turns, waiting.steps) == (RunStatus.WAITING, True, 2, [STEP])
    silent = task_view(summary(ExecutionState.RUNNING), queued=False, progress=None, result=None)
    assert (silent.status, silent.live) == (RunStatus.RUNNING, False)


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.BUDGET_EXCEEDED, RunStatus.MAX_ITERATIONS])
def test_a_result_has_the_last_word(status: RunStatus) -> None:
    view = task_view(summary(ExecutionState.COMPLETED), queued=False, progress=progress(status, turns=4),
                     result=result(status, turns=3))
    assert (view.status, view.output, view.usage.input_tokens, view.turns) == (status, "done", 9, 4)
    assert (view.error is not None) is (status is RunStatus.BUDGET_EXCEEDED)


def test_cancelled_workflows_are_cancelled_whatever_the_run_said() -> None:
    for res in (None, result(RunStatus.COMPLETED)):
        view = task_view(summary(ExecutionState.CANCELLED), queued=False, progress=progress(RunStatus.RUNNING),
                         result=res)
        assert view.status is RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("state", "message"),
    [(ExecutionState.FAILED, "The run failed unexpectedly"),
     (ExecutionState.TERMINATED, "The run was terminated by an operator"),
     (ExecutionState.TIMED_OUT, "The run exceeded its time limit")],
)
def test_abnormal_ends_are_failed_in_user_words(state: ExecutionState, message: str) -> None:
    view = task_view(summary(state), queued=False, progress=None, result=None)
    assert view.status is RunStatus.FAILED
    assert view.error == RunError(code=state.value, message=message)


def test_which_views_need_the_result() -> None:
    assert needs_result(ExecutionState.COMPLETED, None) and needs_result(ExecutionState.CANCELLED, None)
    assert needs_result(ExecutionState.RUNNING, progress(RunStatus.COMPLETED))
    assert not needs_result(ExecutionState.RUNNING, progress(RunStatus.RUNNING))
    assert not needs_result(ExecutionState.RUNNING, None)
    assert not needs_result(ExecutionState.TERMINATED, progress(RunStatus.COMPLETED))
