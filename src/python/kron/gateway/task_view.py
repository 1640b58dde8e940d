"""A task as the API shows it, from what is known about its run: Temporal's view (`TaskSummary`:
open or how it closed; whether a worker has picked it up yet), the run's own account (the
`progress` query) and its result (the workflow's, or the `result` query's). Pure: the I/O is
`runs.RunStore`'s; this is the one place that decides what `status` a task has.

Rules, in order:
- queued (no worker has run it yet): `queued`, nothing more is known;
- otherwise the run's progress says (`running` when no worker answered);
- a workflow cancelled is `cancelled`, whatever the run last said;
- a workflow that failed, was terminated or timed out is `failed`, with an error in user words;
- a result, when there is one, has the last word on status (unless cancelled), output and usage.
"""

from __future__ import annotations

from kron.contracts.models import AgentRunResult, RunError, RunProgress, RunStatus
from kron.gateway.schemas import ExecutionState, TaskDetail, TaskSummary

# Why a run that did not close normally ended, in words for the user (no internals).
ABNORMAL_END = {
    ExecutionState.FAILED: "The run failed unexpectedly",
    ExecutionState.TERMINATED: "The run was terminated by an operator",
    ExecutionState.TIMED_OUT: "The run exceeded its time limit",
}


def needs_result(state: ExecutionState, progress: RunProgress | None) -> bool:
    """Whether the view needs the run's result: it has closed (completed or cancelled) or it says
    it has finished (a run still open that reached a terminal status)."""
    if state in (ExecutionState.COMPLETED, ExecutionState.CANCELLED):
        return True
    return state is ExecutionState.RUNNING and progress is not None and progress.status.is_terminal


def task_view(
    summary: TaskSummary, *, queued: bool, progress: RunProgress | None, result: AgentRunResult | None
) -> TaskDetail:
    fields = summary.model_dump()
    if queued:
        return TaskDetail(**fields, status=RunStatus.QUEUED, live=False)
    state = summary.execution_status
    detail = TaskDetail(**fields, status=progress.status if progress else RunStatus.RUNNING, live=progress is not None)
    if progress is not None:
        detail.turns, detail.steps, detail.usage = progress.turns, progress.steps, progress.usage
        detail.pending_approval = progress.pending_approval
        detail.pending_unknown = progress.pending_unknown
        detail.paused, detail.budget_usd = progress.paused, progress.budget_usd
    if state is ExecutionState.CANCELLED:
        detail.status = RunStatus.CANCELLED
    elif state in ABNORMAL_END:
        detail.status = RunStatus.FAILED
        detail.error = RunError(code=state.value, message=ABNORMAL_END[state])
    if result is not None:
        detail.status = RunStatus.CANCELLED if state is ExecutionState.CANCELLED else result.status
        detail.output, detail.truncated, detail.error = result.output, result.truncated, result.error
        detail.usage, detail.turns = result.usage, max(detail.turns, result.turns)
    return detail
