"""Fixtures for scheduler tests: the scheduler's Temporal worker in-process on its own task queue
(with the real Composio adapter pointed at the test's FakeComposio), next to the agent worker of
`running_stack`, on the session's dev server.

Intervals go down to 1 s here (`schedule_min_interval_seconds=1`) and ledgers poll for overlap skips
every 0.2 s, so fires and their records show up within a second or two.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from kron.agent_core.composio_tools import ComposioToolProvider
from kron.common.schedules import ScheduleSettings, ScheduleStore, ScheduleView
from kron.contracts.schedules import SCHEDULE_ID_PREFIX, FireRecord, RunHistory, ScheduleDefinition
from kron.scheduler.activities import SchedulerActivities
from kron.scheduler.main import build_worker
from kron.scheduler.metrics import SchedulerMetrics
from kron.scheduler.preflight import LazyConnections
from kron_testing import fake_anthropic, polling
from kron_testing.fake_anthropic import Reply
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY, Stack

SLOW_MARKER = "[slow]"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def definition(name: str | None = None, **fields: Any) -> ScheduleDefinition:
    """A schedule that fires only when triggered (a cron far away) unless `timing` says otherwise."""
    values: dict[str, Any] = {
        "name": name or unique("sched"),
        "timing": {"cron": ["0 0 1 1 *"]},
        "run": {"goal": "summarise my notifications"},
    }
    values.update(fields)
    return ScheduleDefinition.model_validate(values)


class SlowFirstRuns:
    """Fake model responder: a run whose goal holds SLOW_MARKER answers after `seconds`, the first
    `slow_runs` times such a run asks (later ones answer at once); every other run at once."""

    def __init__(self, seconds: float = 30.0, slow_runs: int = 1_000) -> None:
        self.seconds = seconds
        self.slow_runs = slow_runs
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any], call_index: int) -> Reply:
        reply = fake_anthropic.text("done", input_tokens=11, output_tokens=7)
        first = (body.get("messages") or [{}])[0]
        if SLOW_MARKER in str(first.get("content")):
            with self._lock:
                slow = self.slow_runs > 0
                self.slow_runs -= 1
            if slow:
                return fake_anthropic.delay(self.seconds, reply)
        return reply


@dataclass
class Scheduler:
    client: Client
    stack: Stack
    settings: ScheduleSettings
    store: ScheduleStore
    metrics: SchedulerMetrics
    registry: CollectorRegistry
    user: str = field(default_factory=lambda: unique("user"))

    async def create(self, definition: ScheduleDefinition, owner: str | None = None) -> ScheduleView:
        return await self.store.create(owner or self.user, definition)

    async def history(self, view: ScheduleView) -> RunHistory:
        return await self.store.history(view.schedule_id)

    async def wait_for_history(
        self, view: ScheduleView, check: Callable[[list[FireRecord]], bool], timeout: float = 20.0
    ) -> list[FireRecord]:
        deadline = time.monotonic() + timeout
        while True:
            records = (await self.history(view)).records
            if check(records):
                return records
            assert time.monotonic() < deadline, f"history never matched: {records}"
            await asyncio.sleep(0.1)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return float(value or 0.0)


def schedule_settings_for(task_queue: str) -> ScheduleSettings:
    return ScheduleSettings(
        scheduler_task_queue=task_queue,
        schedule_min_interval_seconds=1,
        schedule_observe_interval_seconds=0.2,
        schedule_catchup_window_seconds=10,
    )


def scheduler_activities(
    client: Client, stack: Stack, metrics: SchedulerMetrics, observe_interval_seconds: float
) -> SchedulerActivities:
    composio = stack.composio

    def connections() -> ComposioToolProvider:
        return ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio.base_url, timeout=5.0, max_retries=0)

    return SchedulerActivities(
        client,
        metrics,
        LazyConnections(connections),
        connect_callback_url="https://kron.test/connected",
        observe_interval_seconds=observe_interval_seconds,
    )


@pytest.fixture
async def scheduler(running_stack: Stack, client: Client) -> AsyncIterator[Scheduler]:
    """A scheduler worker (fires, ledgers) on a fresh queue; fires run agents on `running_stack`."""
    running_stack.llm.responder = SlowFirstRuns()
    settings = schedule_settings_for(f"sched-{uuid.uuid4().hex[:10]}")
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry)
    activities = scheduler_activities(client, running_stack, metrics, settings.schedule_observe_interval_seconds)
    worker: Worker = build_worker(client, settings.scheduler_task_queue, activities, drain_seconds=1)
    store = ScheduleStore(client, settings, agent_task_queue=running_stack.task_queue)
    async with worker:
        yield Scheduler(client, running_stack, settings, store, metrics, registry)
        await delete_schedules_on(client, settings.scheduler_task_queue)


async def delete_schedules_on(client: Client, scheduler_task_queue: str) -> None:
    """Tests share one server: a schedule left behind would fire for the rest of the session."""
    async for entry in await client.list_schedules(f"ScheduleId STARTS_WITH '{SCHEDULE_ID_PREFIX}'"):
        handle = client.get_schedule_handle(entry.id)
        try:
            action = (await handle.describe()).schedule.action
            if isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == scheduler_task_queue:
                await handle.delete()
        except RPCError as error:
            # The listing is eventually consistent: it can still show a schedule just deleted.
            if error.status != RPCStatusCode.NOT_FOUND:
                raise


# Fires and ledger records take longer to show than a gateway listing.
eventually = functools.partial(polling.eventually, timeout=15.0)


__all__ = ["SLOW_MARKER", "Scheduler", "TemporalDevServer", "definition", "eventually", "unique"]
