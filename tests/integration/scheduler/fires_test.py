"""Schedules firing against a real Temporal dev server: on time, under each concurrency policy,
suspended, trimmed, and with the toolkit preflight re-run at every fire."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import WorkflowExecutionStatus

from kron.common.agent_runs import OWNER_SEARCH_ATTRIBUTE
from kron.contracts.models import RunStatus
from kron.contracts.schedules import DispatchStatus, FireOutcome, FireRecord, FireTrigger

from .conftest import SLOW_MARKER, Scheduler, SlowFirstRuns, definition


def started(records: list[FireRecord], outcome: FireOutcome | None = None) -> list[FireRecord]:
    return [r for r in records if r.dispatch is DispatchStatus.STARTED and (outcome is None or r.outcome is outcome)]


async def test_fires_on_time_and_records_the_outcome(scheduler: Scheduler) -> None:
    view = await scheduler.create(definition(timing={"interval_seconds": 2}, concurrency_policy="Allow"))
    assert view.next_run_times and view.next_run_times[0].timestamp() - time.time() <= 2.5

    records = await scheduler.wait_for_history(
        view, lambda rs: len(started(rs, FireOutcome.SUCCEEDED)) >= 2, timeout=15
    )
    done = started(records, FireOutcome.SUCCEEDED)
    for record in done:
        assert record.trigger is FireTrigger.SCHEDULE and record.run_status is RunStatus.COMPLETED
        assert record.scheduled_at is not None and record.scheduled_at.timestamp() % 2 == 0  # on the interval
        assert 0 <= (record.fired_at - record.scheduled_at).total_seconds() < 5
        assert record.usage is not None and record.usage.input_tokens == 11
        assert record.ended_at is not None and record.ended_at >= record.fired_at
    # The run is an ordinary task of the owner's (GET /tasks lists it by KronUserId).
    run = await scheduler.client.get_workflow_handle(done[0].task_id or "").describe()
    assert run.status == WorkflowExecutionStatus.COMPLETED
    assert run.typed_search_attributes.get(OWNER_SEARCH_ATTRIBUTE) == scheduler.user
    assert (await run.memo())["goal"] == "summarise my notifications"

    assert scheduler.metric("kron_schedule_fires_total", trigger="schedule", dispatch="started") >= 2
    assert scheduler.metric("kron_schedule_run_outcomes_total", outcome="succeeded") >= 2
    assert scheduler.metric("kron_schedule_lag_seconds_count") >= 2

    await scheduler.store.delete(view.schedule_id)
    ledger = await scheduler.client.get_workflow_handle(f"{view.schedule_id}/ledger").describe()
    assert ledger.status == WorkflowExecutionStatus.TERMINATED


async def test_forbid_skips_an_overlapping_fire_and_records_it(scheduler: Scheduler) -> None:
    scheduler.stack.llm.responder = SlowFirstRuns(seconds=2.5)
    view = await scheduler.create(
        definition(run={"goal": f"long digest {SLOW_MARKER}"}, concurrency_policy="Forbid")
    )
    await scheduler.store.trigger(view)
    await scheduler.wait_for_history(view, lambda rs: len(started(rs)) == 1)
    await scheduler.store.trigger(view)  # overlaps the running fire: skipped

    records = await scheduler.wait_for_history(
        view, lambda rs: any(r.dispatch is DispatchStatus.SKIPPED_OVERLAP for r in rs)
        and len(started(rs, FireOutcome.SUCCEEDED)) == 1,
    )
    skipped = [r for r in records if r.dispatch is DispatchStatus.SKIPPED_OVERLAP]
    assert len(skipped) == 1 and skipped[0].task_id is None and skipped[0].outcome is None
    assert "still going" in (skipped[0].error or "")
    assert (await scheduler.history(view)).skips_total == 1
    assert scheduler.metric("kron_schedule_skips_total") == 1
    assert len(started(records)) == 1  # never two runs at once


async def test_replace_cancels_the_running_fire_then_starts(scheduler: Scheduler) -> None:
    scheduler.stack.llm.responder = SlowFirstRuns(seconds=60, slow_runs=1)
    view = await scheduler.create(
        definition(run={"goal": f"replaceable {SLOW_MARKER}"}, concurrency_policy="Replace")
    )
    await scheduler.store.trigger(view)
    first = (await scheduler.wait_for_history(view, lambda rs: len(started(rs)) == 1))[0]
    await scheduler.stack.wait_for_model_requests(1)
    # (no pause: the replacing fire may get the same <id>-<second> workflow id, reused once closed)
    await scheduler.store.trigger(view)

    records = await scheduler.wait_for_history(
        view, lambda rs: len(started(rs, FireOutcome.CANCELLED)) == 1 and len(started(rs, FireOutcome.SUCCEEDED)) == 1
    )
    cancelled = started(records, FireOutcome.CANCELLED)[0]
    assert cancelled.fire_id == first.fire_id and cancelled.task_id == first.task_id
    run = await scheduler.client.get_workflow_handle(first.task_id or "").describe()
    assert run.status == WorkflowExecutionStatus.CANCELED
    assert started(records, FireOutcome.SUCCEEDED)[0].task_id != first.task_id


async def test_suspended_schedules_do_not_fire_but_trigger_still_works(scheduler: Scheduler) -> None:
    view = await scheduler.create(definition(timing={"interval_seconds": 1}, suspend=True, concurrency_policy="Allow"))
    assert view.definition.suspend
    await asyncio.sleep(2.5)
    assert (await scheduler.history(view)).records == []

    fire_id = await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(view, lambda rs: len(started(rs, FireOutcome.SUCCEEDED)) == 1)
    assert records[0].fire_id == fire_id and records[0].trigger is FireTrigger.MANUAL
    await asyncio.sleep(1.5)
    assert len((await scheduler.history(view)).records) == 1  # still suspended: nothing else fired

    resumed = await scheduler.store.set_suspended(view, False)
    assert not resumed.definition.suspend and resumed.next_run_times
    await scheduler.wait_for_history(view, lambda rs: len(rs) >= 2)


async def test_triggers_in_the_same_second_under_allow_all_run(scheduler: Scheduler) -> None:
    view = await scheduler.create(definition(concurrency_policy="Allow", max_run_history=2))
    fire_ids = await asyncio.gather(*(scheduler.store.trigger(view) for _ in range(4)))
    assert len(set(fire_ids)) == 4  # Temporal's <id>-<second> would have dropped all but one

    await scheduler.stack.wait_for_model_requests(4)
    records = await scheduler.wait_for_history(
        view, lambda rs: len(rs) == 2 and all(r.outcome is FireOutcome.SUCCEEDED for r in rs)
    )
    # Trimmed to max_run_history, newest kept.
    assert {r.fire_id for r in records} <= set(fire_ids)
    await asyncio.sleep(0.5)
    assert len((await scheduler.history(view)).records) == 2


async def test_a_toolkit_disconnected_since_creation_fails_the_fire_preflight(scheduler: Scheduler) -> None:
    composio = scheduler.stack.composio
    toolkit = scheduler.stack.add_step_tool(user_id=scheduler.user)  # connected now
    view = await scheduler.create(definition(run={"goal": "append notes", "toolkits": [toolkit]}))
    composio.disconnect(scheduler.user, toolkit)

    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(view, lambda rs: len(rs) == 1)
    record = records[0]
    assert record.dispatch is DispatchStatus.PREFLIGHT_FAILED
    assert record.task_id is None and record.outcome is None
    assert record.toolkit == toolkit and record.connect_url and record.connect_url.startswith("http")
    assert composio.links[-1].callback_url == "https://kron.test/connected"
    assert scheduler.metric("kron_schedule_preflight_failures_total", reason="not_connected") == 1
    assert scheduler.stack.llm.request_count == 0  # no doomed run

    composio.connect(scheduler.user, toolkit)
    await asyncio.sleep(1.1)
    await scheduler.store.trigger(view)
    await scheduler.wait_for_history(view, lambda rs: len(started(rs, FireOutcome.SUCCEEDED)) == 1)


async def test_forbid_records_when_skipped_spec_fires_were_due(scheduler: Scheduler) -> None:
    scheduler.stack.llm.responder = SlowFirstRuns(seconds=2.2)
    view = await scheduler.create(
        definition(timing={"interval_seconds": 1}, run={"goal": f"busy {SLOW_MARKER}"}, concurrency_policy="Forbid")
    )
    records = await scheduler.wait_for_history(
        view, lambda rs: len([r for r in rs if r.dispatch is DispatchStatus.SKIPPED_OVERLAP]) >= 2
    )
    await scheduler.store.delete(view.schedule_id)
    runs = {r.scheduled_at for r in started(records)}
    skipped = [r for r in records if r.dispatch is DispatchStatus.SKIPPED_OVERLAP]
    for record in skipped:
        assert record.scheduled_at is not None and record.scheduled_at.microsecond == 0  # a nominal time
        assert record.scheduled_at not in runs and record.scheduled_at <= record.fired_at
    assert len({r.scheduled_at for r in skipped}) == len(skipped)
