"""The starvation scenario of task-queue fairness, shared by its test and bench/fairness.py.

One worker with few activity slots; user A dispatches many runs (a backlog forms: each run's one
model call takes `model_seconds` at the fake Anthropic server), then user B dispatches a few. What
is measured is B's wait: dispatch → B's first model call, per run. Runs are started the gateway's
way (`RunStore.start`: the owner as fairness key); whether the server is fair is its own config.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client

from kron.common.agent_runs import agent_run_input
from kron.gateway.runs import RunStore
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic


@dataclass
class Outcome:
    b_waits: list[float]  # seconds, B's dispatch → B's first model call, per B run
    a_calls_before_b: int  # A's model calls that started before B's last run got its first
    a_runs: int

    @property
    def worst_wait(self) -> float:
        return max(self.b_waits)


def _goal(user: str, index: int) -> str:
    return f"fairness scenario: {user} run {index}"


def _run_of(body: dict[str, Any] | None) -> tuple[str, int] | None:
    """Whose run (user, index) a model request is for: the goal is in the first user message."""
    messages = (body or {}).get("messages") or []
    first = messages[0].get("content") if messages and isinstance(messages[0], dict) else None
    text = first if isinstance(first, str) else " ".join(
        str(part.get("text", "")) for part in first or [] if isinstance(part, dict)
    )
    marker = "fairness scenario: "
    if marker not in text:
        return None
    user, _, rest = text.split(marker, 1)[1].partition(" run ")
    digits = rest.split()[0] if rest.split() else ""
    return (user, int(digits)) if digits.isdigit() else None


async def starvation(
    client: Client,
    activities: Any,
    llm: FakeAnthropic,
    *,
    a_runs: int,
    b_runs: int,
    slots: int,
    model_seconds: float,
    backlog_before_b: int | None = None,
) -> Outcome:
    """`a_runs` = 0: B alone on an idle system. `activities`: the worker's AgentActivities (on `llm`)."""
    task_queue = f"fairness-{uuid.uuid4().hex[:8]}"
    user_a, user_b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    llm.reset()
    llm.responder = lambda body, i: replies.delay(model_seconds, replies.text("done"))
    runs = RunStore(client, task_queue=task_queue, rpc_timeout=timedelta(seconds=30),
                    query_timeout=timedelta(seconds=5))

    async def dispatch(user: str, index: int) -> float:
        run_input = agent_run_input(
            user_id=user, goal=_goal(user, index), toolkits=[], model=None, max_iterations=None,
            token_budget=None, callback_url=None, approval=None, request_id=None,
        )
        started = time.monotonic()
        await runs.start(run_input, idempotency_key=None)
        return started

    settings = WorkerSettings(task_queue=task_queue, max_concurrent_activities=slots, drain_seconds=1)
    async with build_worker(client, settings, activities):
        for batch in range(0, a_runs, 50):  # A's backlog, 50 starts in flight at a time
            await asyncio.gather(*(dispatch(user_a, i) for i in range(batch, min(a_runs, batch + 50))))
        if a_runs:  # B comes once A's backlog is there: A's calls have started on every slot
            wanted = backlog_before_b if backlog_before_b is not None else slots * 2
            assert await asyncio.to_thread(llm.wait_for_requests, wanted, 120), "A's runs never started"
        b_started = await asyncio.gather(*(dispatch(user_b, i) for i in range(b_runs)))
        first_call: dict[int, float] = {}  # B's run index → its first model call
        deadline = time.monotonic() + 600
        while len(first_call) < b_runs:
            assert time.monotonic() < deadline, "B's runs never reached the model"
            await asyncio.sleep(0.02)
            for request in llm.requests:
                run = _run_of(request.body)
                if run is not None and run[0] == user_b:
                    first_call.setdefault(run[1], request.received_at)
        last_b = max(first_call.values())
        a_before = sum(1 for r in llm.requests if (_run_of(r.body) or ("",))[0] == user_a and r.received_at < last_b)
        waits = [first_call[i] - b_started[i] for i in range(b_runs)]
        await _cancel_rest(client, task_queue)
    return Outcome(b_waits=waits, a_calls_before_b=a_before, a_runs=a_runs)


async def _cancel_rest(client: Client, task_queue: str) -> None:
    """A's remaining backlog is not waited for: terminate what is still open on this queue."""
    async for execution in client.list_workflows(f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"):
        try:
            await client.get_workflow_handle(execution.id).terminate("scenario over")
        except Exception:  # - it may have finished meanwhile
            pass
