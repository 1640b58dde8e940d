"""Recovery levers on a real Temporal server: a retried step moves its run off the sticky queue of
the worker that ran the failed attempt (`UnstickOnRetryInterceptor`), so a run whose worker died does
not wait out the sticky timeout after the retry; a step that did not fail keeps its sticky worker."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is the workflow's too
    from kron.worker.interceptors import LogContextInterceptor, UnstickOnRetryInterceptor


@activity.defn(name="flaky-step")
async def flaky_step(fail_first: bool) -> int:
    if fail_first and activity.info().attempt == 1:
        raise RuntimeError("the first attempt fails (as if its worker had died)")
    return activity.info().attempt


@workflow.defn(name="recovery-steps")
class RecoverySteps:
    @workflow.run
    async def run(self) -> list[int]:
        attempts = []
        for fail_first in (False, True, False):
            attempts.append(await workflow.execute_activity(
                flaky_step, fail_first, start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            ))
        return attempts


async def test_a_retried_step_sends_the_next_workflow_task_to_the_normal_queue(client: Client) -> None:
    queue = f"recovery-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[RecoverySteps], activities=[flaky_step],
                      interceptors=[LogContextInterceptor(), UnstickOnRetryInterceptor()]):
        handle = await client.start_workflow(RecoverySteps.run, id=f"recovery-{uuid.uuid4()}",
                                             task_queue=queue)
        assert await handle.result() == [1, 2, 1]
    history = await handle.fetch_history()
    # The workflow task that follows each step's completion, by the queue kind it was scheduled on.
    kinds = []
    completed = False
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = True
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and completed:
            kinds.append(event.workflow_task_scheduled_event_attributes.task_queue.kind)
            completed = False
    assert kinds == [
        TaskQueueKind.TASK_QUEUE_KIND_STICKY,  # first step: no retry, the sticky worker keeps it
        TaskQueueKind.TASK_QUEUE_KIND_NORMAL,  # retried step: handed to any worker
        TaskQueueKind.TASK_QUEUE_KIND_STICKY,  # the next task made the worker sticky again
    ]
