"""Durable overhead per agent step: AgentWorkflow on a worker + Temporal vs. the in-process runner,
and vs. Temporal's own floor (a bare workflow running as many no-op activities, same server).

Both agent designs drive the same `AgentLoop` against the same fake Anthropic and Composio servers
through the real SDKs; the difference per step is what durability costs. The floor tells how much
of that is Temporal's round trip and how much is kron's own. It also times a full replay of one run's
history (what a worker does on a cache miss: the work the run's workflow task timeout must cover).

    ./pants run bench/durable_overhead.py -- --turns 20 --runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

import _harness
from _floor import FLOOR_WORKFLOW, FloorWorkflow, noop
from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, STEP_TOOL, add_step_tool, median_ms, table
from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.agent_core.loop import AgentLoop, RunLimits
from kron.agent_core.runner import run_agent
from kron.common.agent_runs import RUN_TASK_TIMEOUT
from kron.common.logging import configure_logging
from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunStatus
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron.worker.workflows import TURNS_PER_HISTORY, AgentWorkflow
from kron_testing import fake_anthropic as replies
from kron_testing.temporal_server import TemporalDevServer

USER = "bench-user"


async def main(turns: int, runs: int) -> None:
    llm_fake, composio_fake = _harness.fakes()
    toolkit = add_step_tool(composio_fake, USER)
    llm_fake.responder = replies.scripted_agent(turns, STEP_TOOL)
    steps = turns + 1 + turns  # model calls + tool calls
    llm = AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm_fake.base_url, max_retries=0)
    tools = ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio_fake.base_url)

    async def in_process() -> float:
        started = time.perf_counter()
        loop = AgentLoop(RunLimits(model="claude-sonnet-5", max_iterations=turns + 5), "bench")
        result = await run_agent(loop, llm, tools, user_id=USER, toolkits=[toolkit])
        assert result.status == RunStatus.COMPLETED, result
        return time.perf_counter() - started

    baseline = [await in_process() for _ in range(runs + 1)][1:]  # first run warms caches

    with TemporalDevServer() as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        activities = AgentActivities(llm, tools, default_model="claude-sonnet-5")
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        async with build_worker(client, WorkerSettings(task_queue=queue), activities):

            handles = []

            async def durable() -> float:
                started = time.perf_counter()
                handle = await client.start_workflow(
                    names.AGENT_WORKFLOW,
                    AgentRunInput(user_id=USER, goal="bench", toolkits=[toolkit],
                                  max_iterations=turns + 5),
                    id=f"bench-{uuid.uuid4()}", task_queue=queue, result_type=AgentRunResult,
                    task_timeout=RUN_TASK_TIMEOUT,
                )
                result = await handle.result()
                assert result.status == RunStatus.COMPLETED, result
                handles.append(handle)
                return time.perf_counter() - started

            durable_runs = [await durable() for _ in range(runs + 1)][1:]
        # The first run of the chain: the longest history (a run continues-as-new every 50 turns).
        last = handles[-1]
        history = await client.get_workflow_handle(
            last.id, run_id=last.first_execution_run_id).fetch_history()
        replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter)
        replays = []
        for _ in range(3):
            started = time.perf_counter()
            await replayer.replay_workflow(history)
            replays.append(time.perf_counter() - started)

        floor_queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=floor_queue, workflows=[FloorWorkflow], activities=[noop]):

            async def floor() -> float:
                started = time.perf_counter()
                await client.execute_workflow(FLOOR_WORKFLOW, steps, id=f"bench-floor-{uuid.uuid4()}",
                                              task_queue=floor_queue, result_type=int)
                return time.perf_counter() - started

            floor_runs = [await floor() for _ in range(runs + 1)][1:]

    base_ms, ours_ms, floor_ms = median_ms(baseline), median_ms(durable_runs), median_ms(floor_runs)
    print(f"\nDurable overhead per agent step ({turns} turns = {steps} steps per run, "
          f"median of {runs} runs, {os.cpu_count()} cores)\n")
    print(table([
        ("design", "run (ms)", "per step (ms)"),
        ("in-process runner (baseline)", f"{base_ms:.0f}", f"{base_ms / steps:.1f}"),
        ("worker + Temporal (kron)", f"{ours_ms:.0f}", f"{ours_ms / steps:.1f}"),
        ("Temporal floor: no-op activities", f"{floor_ms:.0f}", f"{floor_ms / steps:.1f}"),
    ]))
    print(f"\ndurable overhead per step: {(ours_ms - base_ms) / steps:.1f} ms   "
          f"ratio kron/baseline: {ours_ms / base_ms:.2f}x")
    # kron's step also does the fake servers' work (what the in-process run measures).
    print(f"kron per step vs Temporal's floor: {ours_ms / floor_ms:.2f}x raw, "
          f"{(ours_ms - base_ms) / floor_ms:.2f}x without the model and tool time")
    print(f"full replay of one run's history ({len(history.events)} events, "
          f"{min(turns, TURNS_PER_HISTORY)} turns): "
          f"{median_ms(replays):.0f} ms (max {max(replays) * 1000:.0f}); the workflow task timeout "
          f"of kron's runs is {RUN_TASK_TIMEOUT.total_seconds():g} s")
    await activities.aclose()
    llm_fake.stop()
    composio_fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    configure_logging("WARNING")  # a line per step would drown the figures
    asyncio.run(main(args.turns, args.runs))
    sys.stdout.flush()  # os._exit skips the flush a piped stdout needs
    os._exit(0)  # skip interpreter teardown after an in-process worker (sdk-python#300)
