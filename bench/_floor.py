"""Temporal's own floor for one agent step: a bare workflow that runs no-op activities one by one.

Same server, same client and data converter as kron's run in the same bench; nothing of kron's
(no loop, no heartbeats, no interceptors, no pydantic models). What kron costs per step above this
is kron's own to cut.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

FLOOR_WORKFLOW = "bench-floor"


@activity.defn(name="bench-noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name=FLOOR_WORKFLOW)
class FloorWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        for step in range(steps):
            await workflow.execute_activity(noop, step, start_to_close_timeout=timedelta(seconds=30))
        return steps
