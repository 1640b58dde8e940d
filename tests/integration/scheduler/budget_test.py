"""A schedule's USD budgets reach its fires: each fire's run gets the per-fire budget, its spend is
booked under the schedule's name in the owner's monthly ledger, and once the schedule's monthly
budget is spent the next fire's run pauses (schedule_month) before its first model call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from kron.contracts import names
from kron.contracts.models import AgentRunResult, BudgetKind, RunProgress, RunStatus
from kron.contracts.schedules import DispatchStatus
from kron.contracts.spend import MonthlySpend, month_of, spend_ledger_id
from kron_testing import fake_anthropic as replies

from .conftest import Scheduler, definition


async def _paused(scheduler: Scheduler, task_id: str) -> RunProgress:
    handle = scheduler.client.get_workflow_handle(task_id, result_type=AgentRunResult)
    deadline = time.monotonic() + 20
    while True:
        progress: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.status is RunStatus.PAUSED:
            return progress
        assert time.monotonic() < deadline, f"run still {progress.status}"
        await asyncio.sleep(0.1)


async def test_a_schedules_budgets_reach_its_fires(scheduler: Scheduler) -> None:
    scheduler.stack.llm.responder = lambda body, i: replies.text("digest sent")
    sched = definition(run={"goal": "send the digest", "budget_usd": 0.5, "monthly_budget_usd": 0.0001})
    view = await scheduler.create(sched)

    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(view, lambda rs: any(r.outcome for r in rs))
    first = scheduler.client.get_workflow_handle(records[0].task_id or "", result_type=AgentRunResult)
    assert (await first.result()).status is RunStatus.COMPLETED
    progress: RunProgress = await first.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert progress.budget_usd == 0.5  # the per-fire budget
    ledger_id = spend_ledger_id(scheduler.user, month_of(datetime.now(UTC)))
    spend: MonthlySpend = await scheduler.client.get_workflow_handle(ledger_id).query(
        names.QUERY_SPEND, result_type=MonthlySpend
    )
    assert spend.by_schedule == {sched.name: pytest.approx(spend.total_usd)} and spend.total_usd >= 0.0001

    # The month's schedule budget is spent: the next fire's run pauses before calling the model.
    calls = scheduler.stack.llm.request_count
    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(
        view, lambda rs: len([r for r in rs if r.dispatch is DispatchStatus.STARTED and r.task_id]) >= 2
    )
    second = next(r.task_id for r in records if r.task_id and r.task_id != first.id)
    assert second is not None
    progress = await _paused(scheduler, second)
    assert progress.paused is not None and progress.paused.budget is BudgetKind.SCHEDULE_MONTH
    assert progress.paused.limit_usd == 0.0001 and progress.paused.spent_usd == pytest.approx(spend.total_usd)
    assert scheduler.stack.llm.request_count == calls
    handle = scheduler.client.get_workflow_handle(second, result_type=AgentRunResult)
    await handle.signal(names.SIGNAL_CANCEL)
    assert (await handle.result()).status is RunStatus.CANCELLED
