"""Temporal history growth per run length: conversation content inline (before transcripts-v1) vs.
in the transcript store (after).

Runs of N turns, one tool call of ~20 kB per turn, against a real Temporal dev server and the fake
Anthropic/Composio servers through the real SDKs. "before" is the same AgentWorkflow with the
transcripts-v1 patch answered "no" (the path runs started before it still take); "after" is what a
new run does. Figures: history bytes over every run of the chain (continue-as-new every 50 turns),
its largest payload, and the bytes the transcript store holds.

    ./pants run bench/history_growth.py -- --turns 50 100 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import _harness
from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, table
from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.common.logging import configure_logging
from kron.common.transcripts import LocalTranscriptStore
from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunProgress, RunStatus
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron.worker.workflows import AgentWorkflow
from kron_testing import fake_anthropic as replies
from kron_testing.history_sizes import HistorySize, history_size
from kron_testing.temporal_server import TemporalDevServer

USER = "bench-user"
TOOL = "MAIL_READ"
BODY_CHARS = 19_500  # + the JSON around it: ~20 kB per result (the Composio adapter cuts at 20,000)


@workflow.defn(name=names.AGENT_WORKFLOW)
class InlineAgentWorkflow(AgentWorkflow):
    """AgentWorkflow on the path of runs started before transcripts-v1 (content inline)."""

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        return await super().run(input)

    def _use_transcripts(self) -> bool:
        return False


def add_big_tool(composio: Any) -> str:
    composio.add_tool(
        TOOL, "mail", "Read one email.",
        {"type": "object", "properties": {"turn": {"type": "integer"}, "call": {"type": "integer"}}},
        lambda user, args: {"turn": args.get("turn"), "body": f"<{args.get('turn')}>" + "x" * BODY_CHARS},
    )
    composio.connect(USER, "mail")
    return "mail"


async def run_once(client: Client, queue: str, toolkit: str, turns: int) -> HistorySize:
    handle = await client.start_workflow(
        names.AGENT_WORKFLOW,
        AgentRunInput(user_id=USER, goal="read my mail", toolkits=[toolkit], max_iterations=turns + 5),
        id=f"bench-{uuid.uuid4()}", task_queue=queue, result_type=AgentRunResult,
    )
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED and result.turns == turns + 1, result
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    failed = [s for s in progress.steps if not s.ok]
    assert not failed, failed[:1]  # the figures are for ~20 kB results, not short errors
    total = HistorySize(0, 0, 0)
    async for run in client.list_workflows(f"WorkflowId = '{handle.id}'"):
        total = total + history_size(await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history())
    return total


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def main(turn_counts: list[int]) -> None:
    llm_fake, composio_fake = _harness.fakes()
    toolkit = add_big_tool(composio_fake)
    llm = AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm_fake.base_url, max_retries=0)
    tools = ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio_fake.base_url)
    rows: list[tuple[str, ...]] = [("turns", "path", "history bytes", "per turn", "largest payload",
                                    "store bytes")]
    figures: dict[tuple[int, str], HistorySize] = {}
    with TemporalDevServer() as server, tempfile.TemporaryDirectory() as scratch:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        for path in ("before", "after"):
            store_dir = Path(scratch) / path
            activities = AgentActivities(llm, tools, default_model="claude-sonnet-5",
                                         transcripts=LocalTranscriptStore(store_dir))
            queue = f"bench-{path}-{uuid.uuid4().hex[:8]}"
            worker: Worker = (
                # Unsandboxed: the sandbox would re-import this module, fake servers and all.
                Worker(client, task_queue=queue, workflows=[InlineAgentWorkflow],
                       activities=activities.all(), workflow_runner=UnsandboxedWorkflowRunner())
                if path == "before"
                else build_worker(client, WorkerSettings(task_queue=queue), activities)
            )
            async with worker:
                for turns in turn_counts:
                    llm_fake.responder = replies.scripted_agent(turns, TOOL)
                    before_store = folder_bytes(store_dir) if store_dir.exists() else 0
                    size = await run_once(client, queue, toolkit, turns)
                    stored = (folder_bytes(store_dir) if store_dir.exists() else 0) - before_store
                    figures[(turns, path)] = size
                    rows.append((str(turns), path, f"{size.total_bytes:,}",
                                 f"{size.total_bytes // turns:,}", f"{size.largest_payload:,}", f"{stored:,}"))
                    print(f"  {path} {turns} turns: {size.total_bytes:,} history bytes", file=sys.stderr)
            await activities.aclose()
    llm_fake.stop()
    composio_fake.stop()

    print(f"\nTemporal history per run: one ~20 kB tool result per turn ({os.cpu_count()} cores)\n")
    print(table(rows))
    print()
    for turns in turn_counts:
        before, after = figures[(turns, "before")], figures[(turns, "after")]
        print(f"{turns} turns: history before/after {before.total_bytes / after.total_bytes:.1f}x, "
              f"largest payload before/after {before.largest_payload / after.largest_payload:.1f}x")
    first, last = turn_counts[0], turn_counts[-1]
    for path in ("before", "after"):
        growth = figures[(last, path)].total_bytes / figures[(first, path)].total_bytes
        print(f"{path}: {last / first:.0f}x the turns -> {growth:.1f}x the history bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, nargs="+", default=[50, 100, 200])
    args = parser.parse_args()
    configure_logging("WARNING")
    asyncio.run(main(args.turns))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after an in-process worker (sdk-python#300)
