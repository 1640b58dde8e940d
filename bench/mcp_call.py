"""An MCP tool call inside a run vs a Composio (fake) call: the same AgentWorkflow, worker and
Temporal dev server, the same fake Anthropic; one run's tool is the fake Composio server's step
tool (through the composio SDK), the other's the test MCP server's read-only `lookup` (through the
mcp SDK: a fresh Client per call activity, mode "auto", one shared connection pool).

Per run: `turns` model turns, each with one tool call. Reported: the median run, the median tool
step as the activity measured it (the call itself), and the difference per call between the two.

    ./pants run bench/mcp_call.py -- --turns 10 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

import _harness
from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, STEP_TOOL, add_step_tool, median_ms, table
from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.common.logging import configure_logging
from kron.common.mcp_connect import McpConnector
from kron.contracts import names
from kron.contracts.mcp import McpServer
from kron.contracts.models import AgentRunInput, AgentRunResult, RunProgress, RunStatus, StepKind
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker
from kron.worker.mcp_activities import McpActivities
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer
from kron_testing.temporal_server import TemporalDevServer

USER = "bench-user"
MCP_TOOL = "mcp__tools__lookup"


def responder(turns: int) -> replies.Responder:
    """Each turn calls the tool the run has (by what the request lists), then ends."""

    def respond(body: dict[str, Any], index: int) -> replies.Reply:
        turn = replies.turn_of(body)
        if turn >= turns:
            return replies.text("done")
        tools = {t["name"] for t in body.get("tools", [])}
        if MCP_TOOL in tools:
            return replies.tool_use([(MCP_TOOL, {"key": f"k{turn}"})])
        return replies.tool_use([(STEP_TOOL, {"turn": turn})])

    return respond


async def main(turns: int, runs: int) -> None:
    llm_fake, composio_fake = _harness.fakes()
    toolkit = add_step_tool(composio_fake, USER)
    llm_fake.responder = responder(turns)
    llm = AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm_fake.base_url, max_retries=0)
    tools = ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio_fake.base_url)
    results: dict[str, tuple[list[float], list[float]]] = {}
    with McpTestServer() as mcp_server, TemporalDevServer() as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        activities = AgentActivities(llm, tools, default_model="claude-sonnet-5")
        connector = McpConnector(secrets_dir=None)
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        mcp = McpActivities(connector, store_result=activities.store_tool_result)
        async with build_worker(client, WorkerSettings(task_queue=queue), activities, mcp):

            async def run(**fields: Any) -> tuple[float, list[float]]:
                started = time.perf_counter()
                handle = await client.start_workflow(
                    names.AGENT_WORKFLOW,
                    AgentRunInput(user_id=USER, goal="bench", max_iterations=turns + 5, **fields),
                    id=f"bench-{uuid.uuid4()}", task_queue=queue, result_type=AgentRunResult,
                )
                result = await handle.result()
                elapsed = time.perf_counter() - started
                assert result.status == RunStatus.COMPLETED, result
                progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
                steps = [s.duration_seconds for s in progress.steps if s.kind is StepKind.TOOL]
                assert len(steps) == turns and all(s.ok for s in progress.steps), progress.steps
                return elapsed, steps

            designs: dict[str, dict[str, Any]] = {
                "Composio (fake server)": {"toolkits": [toolkit]},
                "MCP (test MCPServer)": {"mcp_servers": [McpServer(name="tools", url=mcp_server.url)]},
            }
            for name, fields in designs.items():
                await run(**fields)  # warm-up
                measured = [await run(**fields) for _ in range(runs)]
                results[name] = ([m[0] for m in measured], [s for m in measured for s in m[1]])
        await activities.aclose()
        await connector.aclose()
    llm_fake.stop()
    composio_fake.stop()

    print(f"\nA tool call inside a run: MCP vs Composio-fake ({turns} tool calls per run, "
          f"median of {runs} runs, {os.cpu_count()} cores)\n")
    rows: list[tuple[str, ...]] = [("tool source", "run (ms)", "tool step, activity-measured (ms)")]
    for name, (run_times, step_times) in results.items():
        rows.append((name, f"{median_ms(run_times):.0f}", f"{statistics.median(step_times) * 1000:.1f}"))
    print(table(rows))
    (composio_runs, composio_steps), (mcp_runs, mcp_steps) = results.values()
    per_call = (median_ms(mcp_runs) - median_ms(composio_runs)) / turns
    print(f"\nMCP minus Composio, per call: {per_call:+.1f} ms (whole run), "
          f"{(statistics.median(mcp_steps) - statistics.median(composio_steps)) * 1000:+.1f} ms (the call)")
    print(f"ratio MCP/Composio: {median_ms(mcp_runs) / median_ms(composio_runs):.2f}x per run, "
          f"{statistics.median(mcp_steps) / statistics.median(composio_steps):.2f}x per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    configure_logging("WARNING")
    asyncio.run(main(args.turns, args.runs))
    sys.stdout.flush()
    os._exit(0)  # as kron-worker: skip interpreter teardown after in-process workers
