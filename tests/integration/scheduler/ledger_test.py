"""The run-history ledger across continue-as-new: nothing recorded is lost, and the overlap-skip
count carries over (no skip recorded twice)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from kron.common.schedules import ScheduleStore, ledger_id
from kron.contracts.schedules import FireOutcome
from kron.scheduler import workflows
from kron.scheduler.metrics import SchedulerMetrics

from ..conftest import Stack
from .conftest import (
    SlowFirstRuns,
    definition,
    delete_schedules_on,
    schedule_settings_for,
    scheduler_activities,
    unique,
)


async def test_the_ledger_keeps_its_records_across_continue_as_new(
    running_stack: Stack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_stack.llm.responder = SlowFirstRuns()
    # Unsandboxed so that the patched constant is the one the workflow reads.
    monkeypatch.setattr(workflows, "EVENTS_PER_LEDGER_RUN", 3)
    settings = schedule_settings_for(f"sched-{uuid.uuid4().hex[:10]}")
    metrics = SchedulerMetrics(CollectorRegistry())
    activities = scheduler_activities(client, running_stack, metrics, settings.schedule_observe_interval_seconds)
    store = ScheduleStore(client, settings, agent_task_queue=running_stack.task_queue)
    async with Worker(
        client,
        task_queue=settings.scheduler_task_queue,
        workflows=[workflows.ScheduledFireWorkflow, workflows.ScheduleLedgerWorkflow],
        activities=activities.all(),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        view = await store.create(unique("user"), definition(concurrency_policy="Forbid"))
        first_run = (await client.get_workflow_handle(ledger_id(view.schedule_id)).describe()).run_id
        for fired in range(1, 5):
            await store.trigger(view)
            for _ in range(200):
                records = (await store.history(view.schedule_id)).records
                if len(records) == fired and all(r.outcome is FireOutcome.SUCCEEDED for r in records):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"fire {fired} not recorded: {records}")
        history = await store.history(view.schedule_id)
        ledger = await client.get_workflow_handle(ledger_id(view.schedule_id)).describe()
        assert ledger.run_id != first_run  # it continued as new at least once
        # Triggers in one second reuse a closed fire's workflow id: the run id tells them apart.
        assert len({(r.fire_id, r.fire_run_id) for r in history.records}) == len(history.records) == 4
        assert all(r.outcome is FireOutcome.SUCCEEDED for r in history.records)
        assert history.skips_total == 0
        await delete_schedules_on(client, settings.scheduler_task_queue)
