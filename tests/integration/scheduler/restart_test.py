"""`python -m kron.scheduler.main` as in production, killed (SIGKILL) while a scheduled run is in
flight and fires keep coming: its replacement loses no fire, no record and no schedule."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client

from kron.common.schedules import ScheduleNotFound, ScheduleStore
from kron.contracts.schedules import DispatchStatus, FireRecord
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY, Stack
from .conftest import SLOW_MARKER, SlowFirstRuns, delete_schedules_on, schedule_settings_for, unique

T = TypeVar("T")
RESOURCE = """\
apiVersion: kron.dev/v1alpha1
kind: ScheduledRun
metadata: {{name: {name}, namespace: team-a}}
spec:
  user: {user}
  timing: {{intervalSeconds: 2}}
  run: {{goal: "digest {slow}"}}
  concurrencyPolicy: Allow
  maxRunHistory: 50
  suspend: {suspend}
"""


def spawn_scheduler(env: dict[str, str]) -> KronProcess:
    return KronProcess("kron.scheduler.main", env, ready_marker="kron-scheduler ready").wait_ready()


async def test_a_killed_scheduler_loses_nothing(
    running_stack: Stack, client: Client, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    running_stack.llm.responder = SlowFirstRuns(seconds=1.5)
    user, name = unique("user"), unique("digest")
    path, status_path = tmp_path / "runs.yaml", tmp_path / "status.json"
    path.write_text(RESOURCE.format(name=name, user=user, slow=SLOW_MARKER, suspend="false"))
    settings = schedule_settings_for(f"sched-{uuid.uuid4().hex[:10]}")
    env = {
        "KRON_TEMPORAL_ADDRESS": temporal_server.address,
        "KRON_SCHEDULER_TASK_QUEUE": settings.scheduler_task_queue,
        "KRON_AGENT_TASK_QUEUE": running_stack.task_queue,
        "KRON_SCHEDULER_SOURCE": "yaml",
        "KRON_SCHEDULER_SOURCE_ID": unique("yaml"),
        "KRON_SCHEDULER_YAML_PATH": str(path),
        "KRON_SCHEDULER_STATUS_PATH": str(status_path),
        "KRON_SCHEDULER_RESYNC_SECONDS": "1",
        "KRON_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
        "KRON_SCHEDULE_OBSERVE_INTERVAL_SECONDS": "0.2",
        "KRON_METRICS_PORT": "0",
        "KRON_DRAIN_SECONDS": "1",
        "KRON_LOG_LEVEL": "WARNING",
        "COMPOSIO_API_KEY": COMPOSIO_KEY,
        "COMPOSIO_BASE_URL": running_stack.composio.base_url,
    }
    store = ScheduleStore(client, settings, agent_task_queue=running_stack.task_queue)

    async def records() -> list[FireRecord]:
        view = await store.get_owned(user, name)
        return (await store.history(view.schedule_id)).records

    async def one_done_one_running() -> bool:
        history = await records()
        return any(r.outcome for r in history) and any(r.active for r in history)

    async def suspended() -> bool:
        return (await store.get_owned(user, name)).definition.suspend

    async def settled(fires_total: int) -> list[FireRecord] | None:
        history = await records()
        return history if len(history) == fires_total and all(r.outcome for r in history) else None

    first = spawn_scheduler(env)
    try:
        # Synced, fired, and a run in flight (runs take 1.5 s, fires every 2 s).
        await wait_until(one_done_one_running)
    finally:
        first.kill()
    await asyncio.sleep(3)  # fires keep coming with no scheduler: their workflows wait in the queue

    second = spawn_scheduler(env)
    try:
        path.write_text(RESOURCE.format(name=name, user=user, slow=SLOW_MARKER, suspend="true"))
        await wait_until(suspended)
        view = await store.get_owned(user, name)
        # Every fire Temporal made has a record, and every run its outcome.
        history = await wait_until(lambda: settled(view.fires_total))
        assert len(history) == view.fires_total >= 3
        assert all(r.dispatch is DispatchStatus.STARTED and r.outcome is not None for r in history)
        statuses = json.loads(status_path.read_text())
        assert statuses[f"team-a/{name}"]["conditions"][0]["reason"] == "Synced"
        assert len(await store.list_by_source(env["KRON_SCHEDULER_SOURCE_ID"])) == 1
    finally:
        assert second.terminate(timeout=30) == 0
        await delete_schedules_on(client, settings.scheduler_task_queue)


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := await check():
                return result
        except ScheduleNotFound:  # the sync has not made it yet
            pass
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)
