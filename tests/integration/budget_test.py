"""USD cost and budgets on real Temporal: runs priced per call, paused (not failed) at their budget,
resumed by a higher one, ended as budget_exceeded when none comes; the monthly spend ledger.

The fake Anthropic answers with known usage (100 input, 20 output tokens a call) and echoes the
model asked for; at claude-sonnet-5's list price ($2 / $10 per MTok) a call costs $0.0004.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from kron.agent_core.demo import DEMO_MODEL
from kron.contracts import names
from kron.contracts.models import (
    AgentRunResult,
    BudgetKind,
    BudgetUpdate,
    RunProgress,
    RunStatus,
)
from kron.contracts.spend import MonthlySpend, month_of, spend_ledger_id
from kron.contracts.webhooks import WebhookEvent
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker, price_table
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies

from .agent_workflow_test import _WebhookReceiver, webhook  # noqa: F401 - the fixture
from .conftest import Stack, make_activities

CALL_USD = 0.0004


async def progress_of(handle: WorkflowHandle[Any, AgentRunResult]) -> RunProgress:
    answer: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    return answer


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def paused(handle: WorkflowHandle[Any, AgentRunResult]) -> RunProgress:
    async def is_paused() -> bool:
        return (await progress_of(handle)).status is RunStatus.PAUSED

    await until(is_paused)
    return await progress_of(handle)


async def test_each_call_and_the_run_are_priced(running_stack: Stack) -> None:
    running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND")
    handle = await running_stack.start_run(toolkits=["notes"])
    result = await handle.result()
    assert result.status is RunStatus.COMPLETED
    assert result.usage.cost_usd == pytest.approx(3 * CALL_USD)
    progress = await progress_of(handle)
    model_steps = [s for s in progress.steps if s.kind == "model"]
    assert [s.cost_usd for s in model_steps] == pytest.approx([CALL_USD] * 3)


async def test_an_unknown_model_costs_none_not_zero(running_stack: Stack) -> None:
    running_stack.llm.enqueue(replies.text("hello"))
    handle = await running_stack.start_run(model="claude-unreleased-9")
    result = await handle.result()
    assert result.status is RunStatus.COMPLETED
    assert result.usage.cost_usd is None
    assert (await progress_of(handle)).steps[0].cost_usd is None


async def test_a_run_pauses_at_its_budget_and_a_higher_one_resumes_it(
    running_stack: Stack, webhook: _WebhookReceiver  # noqa: F811
) -> None:
    running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(5, "NOTES_APPEND")
    # $0.001: the third call ($0.0012 in all) goes over; the run must not make a fourth.
    handle = await running_stack.start_run(toolkits=["notes"], budget_usd=0.001, callback_url=webhook.url,
                                           webhook_events=[WebhookEvent.RUN_PAUSED, WebhookEvent.RUN_COMPLETED])
    progress = await paused(handle)
    assert progress.paused is not None
    assert progress.paused.reason == "budget_reached" and progress.paused.budget is BudgetKind.RUN
    assert progress.paused.spent_usd == pytest.approx(3 * CALL_USD)
    assert progress.paused.limit_usd == 0.001
    assert progress.paused.timeout_seconds == 7 * 24 * 3600
    await asyncio.sleep(0.5)
    assert running_stack.llm.request_count == 3
    # The soft limit (80 %: $0.0008, after the second call) told the model to wrap up, once.
    notes = [json.dumps(r.body).count("Wrap up") for r in running_stack.llm.requests]
    assert notes == [0, 0, 1]

    async def paused_webhook() -> bool:
        return bool(webhook.bodies)

    await until(paused_webhook)
    envelope = json.loads(webhook.bodies[0][0])
    payload = envelope["data"]
    assert envelope["type"] == "run.paused" and payload["task_id"] == handle.id
    assert payload["paused"]["budget"] == "run" and payload["result"]["status"] == "paused"

    await handle.signal(names.SIGNAL_SET_BUDGET, BudgetUpdate(budget_usd=0.01))
    result = await handle.result()
    assert result.status is RunStatus.COMPLETED
    assert result.usage.cost_usd == pytest.approx(6 * CALL_USD)
    assert (await progress_of(handle)).budget_usd == 0.01


async def test_a_raise_still_below_the_spend_keeps_it_paused(running_stack: Stack) -> None:
    running_stack.llm.responder = replies.scripted_agent(5, "NOTES_APPEND")
    running_stack.add_step_tool()
    handle = await running_stack.start_run(toolkits=["notes"], budget_usd=0.0007)
    await paused(handle)  # after 2 calls: $0.0008
    await handle.signal(names.SIGNAL_SET_BUDGET, BudgetUpdate(budget_usd=0.00075))
    await asyncio.sleep(1.0)
    progress = await progress_of(handle)
    assert progress.status is RunStatus.PAUSED and progress.paused is not None
    assert progress.paused.limit_usd == 0.00075
    assert running_stack.llm.request_count == 2
    await handle.signal(names.SIGNAL_CANCEL)
    assert (await handle.result()).status is RunStatus.CANCELLED


async def test_no_higher_budget_within_the_pause_timeout_ends_it_as_budget_exceeded(
    running_stack: Stack,
) -> None:
    running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(5, "NOTES_APPEND")
    handle = await running_stack.start_run(
        toolkits=["notes"], budget_usd=0.0005, budget_pause_timeout_seconds=2
    )
    result = await handle.result()
    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert result.error is not None and result.error.code == "budget_exceeded"
    assert "no higher budget within 2 s" in result.error.message
    assert result.usage.cost_usd == pytest.approx(2 * CALL_USD)
    assert running_stack.llm.request_count == 2


def _worker(stack: Stack, activities: AgentActivities) -> Worker:
    return build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1), activities)


async def test_the_monthly_ledger_sums_a_users_calls_and_its_budget_pauses_runs(stack: Stack) -> None:
    user = f"spender-{time.monotonic_ns()}"
    stack.add_step_tool(user_id=user)
    stack.llm.responder = replies.scripted_agent(3, "NOTES_APPEND")
    activities = make_activities(stack.llm, stack.composio)
    async with _worker(stack, activities):
        first = await stack.start_run(user_id=user, toolkits=["notes"], schedule_name="digest")
        await first.result()  # 4 calls
        ledger = await _ledger(stack, user)
        assert ledger.model_calls == 4 and ledger.total_usd == pytest.approx(4 * CALL_USD)
        assert ledger.by_model == pytest.approx({"claude-sonnet-5": 4 * CALL_USD})
        assert ledger.by_schedule == pytest.approx({"digest": 4 * CALL_USD})
    await activities.aclose()

    # A monthly budget already spent: the next run pauses before its first call, rechecks, and
    # ends as budget_exceeded when the pause times out.
    capped = make_activities(stack.llm, stack.composio, user_monthly_budget_usd=0.0015)
    async with _worker(stack, capped):
        second = await stack.start_run(
            user_id=user, toolkits=["notes"], budget_pause_timeout_seconds=3, budget_recheck_seconds=1
        )
        progress = await paused(second)
        assert progress.paused is not None and progress.paused.budget is BudgetKind.USER_MONTH
        assert progress.paused.spent_usd == pytest.approx(4 * CALL_USD)
        assert progress.paused.limit_usd == 0.0015
        result = await second.result()
        assert result.status is RunStatus.BUDGET_EXCEEDED
        assert stack.llm.request_count == 4  # not one call more
    await capped.aclose()

    # A higher monthly budget (the worker's setting, so a restarted worker) lets a paused run go
    # on at its next check.
    async with _worker(stack, capped := make_activities(stack.llm, stack.composio, user_monthly_budget_usd=0.0015)):
        third = await stack.start_run(user_id=user, toolkits=["notes"], budget_recheck_seconds=1)
        await paused(third)
    await capped.aclose()
    raised = make_activities(stack.llm, stack.composio, user_monthly_budgets_usd={user: 1.0})
    async with _worker(stack, raised):
        assert (await third.result()).status is RunStatus.COMPLETED
        assert (await _ledger(stack, user)).model_calls == 8
    await raised.aclose()


async def _ledger(stack: Stack, user: str) -> MonthlySpend:
    handle = stack.client.get_workflow_handle(spend_ledger_id(user, month_of(datetime.now(UTC))))
    spend: MonthlySpend = await handle.query(names.QUERY_SPEND, result_type=MonthlySpend)
    return spend


def test_prices_and_monthly_budgets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_MODEL_PRICES", '{"my-proxy-model": {"input": 4, "output": 8}}')
    monkeypatch.setenv("KRON_USER_MONTHLY_BUDGET_USD", "25")
    monkeypatch.setenv("KRON_USER_MONTHLY_BUDGETS_USD", '{"alice": 100}')
    settings = WorkerSettings()
    assert price_table(settings).cost_usd("my-proxy-model", input_tokens=0, output_tokens=1_000_000) == 8.0
    assert settings.user_monthly_budget_usd == 25 and settings.user_monthly_budgets_usd == {"alice": 100}
    monkeypatch.setenv("KRON_USER_MONTHLY_BUDGETS_USD", '{"alice": -1}')
    with pytest.raises(ValueError):
        WorkerSettings()


def test_the_offline_demo_model_is_free_only_in_demo_mode() -> None:
    demo = price_table(WorkerSettings(demo_mode=True))
    assert demo.cost_usd(DEMO_MODEL, input_tokens=1000, output_tokens=1000) == 0.0
    assert price_table(WorkerSettings()).cost_usd(DEMO_MODEL, input_tokens=1, output_tokens=1) is None
    overridden = price_table(WorkerSettings.model_validate({"model_prices": {"claude-sonnet-5": {"input": 1, "output": 1}}}))
    assert overridden.cost_usd("claude-sonnet-5", input_tokens=1_000_000, output_tokens=0) == 1.0
