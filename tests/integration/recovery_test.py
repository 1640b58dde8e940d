"""Recovery levers on a real Temporal server: a retried step moves its run off the sticky queue of
the worker that ran the failed attempt (`UnstickOnRetryInterceptor`), so a run whose worker died does
not wait out the sticky timeout after the retry; a step that did not fail keeps its sticky worker.
And the scheduler's child start gained a task timeout without a patch: fires started before replay."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

with workflow.unsafe.imports_passed_through():  # this module is the workflow's too
    from kron.common.agent_runs import RUN_TASK_TIMEOUT
    from kron.worker.interceptors import LogContextInterceptor, UnstickOnRetryInterceptor

# The child's task timeout as the parent's code gives it (None: as before RUN_TASK_TIMEOUT).
CHILD_TASK_TIMEOUT: list[timedelta | None] = [None]


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


@workflow.defn(name="recovery-child")
class Child:
    @workflow.run
    async def run(self) -> int:
        return 1


@workflow.defn(name="recovery-parent")
class Parent:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_child_workflow(
            Child.run, id=f"{workflow.info().workflow_id}-child", task_timeout=CHILD_TASK_TIMEOUT[0])


async def test_a_child_started_without_a_task_timeout_replays_with_one(client: Client) -> None:
    queue = f"recovery-{uuid.uuid4().hex[:8]}"
    CHILD_TASK_TIMEOUT[0] = None
    # Unsandboxed: the sandbox would re-import this module and never see the changed timeout.
    unsandboxed = UnsandboxedWorkflowRunner()
    async with Worker(client, task_queue=queue, workflows=[Parent, Child], workflow_runner=unsandboxed):
        handle = await client.start_workflow(Parent.run, id=f"recovery-{uuid.uuid4()}", task_queue=queue)
        assert await handle.result() == 1
    history = await handle.fetch_history()
    CHILD_TASK_TIMEOUT[0] = RUN_TASK_TIMEOUT
    try:
        await Replayer(workflows=[Parent, Child], workflow_runner=unsandboxed).replay_workflow(history)
    finally:
        CHILD_TASK_TIMEOUT[0] = None
