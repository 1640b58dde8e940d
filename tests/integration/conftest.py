"""Fixtures for tests that run kron against real components.

One real Temporal dev server per session; fake Anthropic and Composio servers per test, driven through
the real SDKs; workers either in-process (fast) or as `python -m kron.worker.main` subprocesses
(crash tests). Every server is started here and stopped here, on 127.0.0.1 with free ports.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.common.mcp_connect import McpConnector
from kron.common.transcripts import TranscriptStore
from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker
from kron.worker.mcp_activities import McpActivities
from kron.worker.settings import WorkerSettings
from kron_testing.fake_anthropic import FakeAnthropic
from kron_testing.fake_composio import FakeComposio, ToolFailed
from kron_testing.mcp_server import McpTestServer
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer

COMPOSIO_KEY = "ck-fake-composio-key-for-tests"
ANTHROPIC_KEY = "sk-ant-fake-anthropic-key-for-tests"
# Standard Webhooks secrets: whsec_ and a base64 key (receivers verify with the standardwebhooks library).
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"fake-webhook-key-for-kron-tests").decode()


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[TemporalDevServer]:
    with TemporalDevServer() as server:
        yield server


@pytest.fixture(scope="session")
async def client(temporal_server: TemporalDevServer) -> Client:
    return await Client.connect(temporal_server.address, data_converter=pydantic_data_converter)


@pytest.fixture
def fake_llm() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture
def fake_composio() -> Iterator[FakeComposio]:
    with FakeComposio(api_key=COMPOSIO_KEY) as fake:
        yield fake


@dataclass
class Stack:
    """A worker wired to the fakes, on its own task queue."""

    client: Client
    task_queue: str
    llm: FakeAnthropic
    composio: FakeComposio

    async def start_run(self, **fields: Any) -> WorkflowHandle[Any, AgentRunResult]:
        fields.setdefault("user_id", "alice")
        fields.setdefault("goal", "triage my inbox")
        return await self.client.start_workflow(
            names.AGENT_WORKFLOW,
            AgentRunInput(**fields),
            id=f"run-{uuid.uuid4()}",
            task_queue=self.task_queue,
            result_type=AgentRunResult,
        )

    async def wait_for_model_requests(self, count: int, timeout: float = 30.0) -> None:
        """Wait (without blocking the event loop an in-process worker runs on) for `count` calls."""
        if not await asyncio.to_thread(self.llm.wait_for_requests, count, timeout):
            raise AssertionError(f"fewer than {count} model requests after {timeout}s")

    def add_step_tool(self, slug: str = "NOTES_APPEND", user_id: str = "alice") -> str:
        """A connected tool taking the fake LLM's default `{turn, call}` input; returns its toolkit."""

        def handler(user: str, args: dict[str, Any]) -> dict[str, Any]:
            if args.get("fail"):
                raise ToolFailed(f"cannot append note {args.get('turn')}: disk full")
            return {"appended": True, "turn": args.get("turn"), "call": args.get("call")}

        self.composio.add_tool(
            slug,
            "notes",
            "Append a note.",
            {
                "type": "object",
                "properties": {
                    "turn": {"type": "integer"},
                    "call": {"type": "integer"},
                    "fail": {"type": "boolean"},
                },
                "required": ["turn"],
            },
            handler,
        )
        self.composio.connect(user_id, "notes")
        return "notes"

    def worker_env(self, temporal_address: str) -> dict[str, str]:
        """Environment for a `kron.worker.main` subprocess on this stack's queue and fakes."""
        return {
            "KRON_TEMPORAL_ADDRESS": temporal_address,
            "KRON_TASK_QUEUE": self.task_queue,
            "KRON_METRICS_PORT": "0",
            "KRON_DRAIN_SECONDS": "5",
            "KRON_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "KRON_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "KRON_LOG_LEVEL": "WARNING",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": self.llm.base_url,
            "COMPOSIO_API_KEY": COMPOSIO_KEY,
            "COMPOSIO_BASE_URL": self.composio.base_url,
        }


def make_activities(
    llm: FakeAnthropic,
    composio: FakeComposio,
    *,
    webhook_allow_private_networks: bool = True,
    transcripts: TranscriptStore | None = None,
    **options: Any,
) -> AgentActivities:
    """Webhooks may go to private networks by default here: the tests' receivers are on loopback.
    Transcripts: in this process's memory unless a store is given. `options`: more AgentActivities
    keyword arguments (prices, monthly budgets)."""
    options.setdefault("webhook_secret", WEBHOOK_SECRET)
    return AgentActivities(
        AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm.base_url, max_retries=0),
        ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio.base_url),
        default_model="claude-sonnet-5",
        webhook_allow_private_networks=webhook_allow_private_networks,
        transcripts=transcripts,
        **options,
    )


@pytest.fixture
def stack(client: Client, fake_llm: FakeAnthropic, fake_composio: FakeComposio) -> Stack:
    """Fakes and a fresh task queue, no worker: tests that manage workers themselves use this."""
    return Stack(client, f"test-{uuid.uuid4().hex[:10]}", fake_llm, fake_composio)


@pytest.fixture
async def running_stack(stack: Stack) -> AsyncIterator[Stack]:
    """`stack` with an in-process worker polling its task queue (MCP activities included: header
    values from this process's environment, no secrets directory)."""
    activities = make_activities(stack.llm, stack.composio)
    connector = McpConnector(secrets_dir=None)
    mcp = McpActivities(connector, store_result=activities.store_tool_result)
    worker: Worker = build_worker(
        stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1), activities, mcp
    )
    async with worker:
        yield stack
    await activities.aclose()
    await connector.aclose()


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    """A real MCP server (read-only `lookup`, destructive `delete_item`) on a loopback port."""
    with McpTestServer() as server:
        yield server


def spawn_worker(stack: Stack, temporal: TemporalDevServer, **env: str) -> KronProcess:
    return KronProcess(
        "kron.worker.main",
        {**stack.worker_env(temporal.address), **env},
        ready_marker="kron-worker ready",
    ).wait_ready()
