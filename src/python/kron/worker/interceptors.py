"""Worker interceptors: structlog context for each activity; the recovery levers that act on every
step (this worker's heartbeat timeout, and a retried step handing its run off a dead worker's sticky
queue)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import structlog
from temporalio import activity, workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from kron.common.logging import get_logger

log = get_logger(__name__)


class _BindLogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # Each activity runs in its own asyncio task (or thread), so this binding is its own.
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            attempt=info.attempt,
        ):
            return await self.next.execute_activity(input)


class LogContextInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindLogContext(next)


class _UnstickOnRetry(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.attempt > 1 and info.heartbeat_timeout and info.workflow_id:
            await _reset_sticky_queue(info.workflow_id, info.workflow_run_id or "")
        return await self.next.execute_activity(input)


async def _reset_sticky_queue(workflow_id: str, run_id: str) -> None:
    """The step's earlier attempt failed or timed out, maybe because its worker died; the run's
    next workflow task would then wait on that worker's sticky queue for the sticky timeout. Sent to
    the normal queue instead, it costs at most one replay on a live worker. Best effort."""
    client = activity.client()
    try:
        await client.workflow_service.reset_sticky_task_queue(
            ResetStickyTaskQueueRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            ),
            timeout=timedelta(seconds=2),
        )
    except Exception as error:  # noqa: BLE001 - the sticky timeout still applies; the step goes on
        log.warning("sticky queue not reset", exc_type=type(error).__name__)


class UnstickOnRetryInterceptor(Interceptor):
    """A retried step that heartbeats (one that a dead worker can lose) first moves its run's
    workflow tasks off the sticky queue of the worker that ran the failed attempt."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _UnstickOnRetry(next)


class HeartbeatTimeoutInterceptor(Interceptor):
    """Gives every step that heartbeats (a `StepOptions` with a heartbeat timeout) this worker's
    `KRON_HEARTBEAT_TIMEOUT_SECONDS` instead of the bundle's default, so the recovery lever is a
    setting while workflows stay pure (they never read settings). Replay-safe: Temporal checks an
    activity command's type and id, not its timeouts."""

    def __init__(self, heartbeat_timeout: timedelta) -> None:
        self.heartbeat_timeout = heartbeat_timeout

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        timeout = self.heartbeat_timeout

        class _Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
                if input.heartbeat_timeout is not None:
                    input = dataclasses.replace(input, heartbeat_timeout=timeout)
                return super().start_activity(input)

        class _Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(_Outbound(outbound))

        return _Inbound
