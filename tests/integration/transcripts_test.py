"""Transcripts out of Temporal history (transcripts-v1) on a real Temporal server: a long run's
history stays small while the model still sees every byte, on a local directory and on S3."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from kron.common.transcripts import LocalTranscriptStore, S3TranscriptStore, TranscriptStore
from kron.contracts import names
from kron.contracts.models import AgentRunResult, RunProgress, RunStatus
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.history_sizes import history_size
from kron_testing.s3_server import MotoS3

from .conftest import Stack, make_activities

RESULT_BYTES = 19_000  # the Composio adapter cuts results at 20,000 characters
TURNS = 30


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with MotoS3() as server:
        yield server


async def _with_worker(stack: Stack, store: TranscriptStore, **activity_options: Any) -> AsyncIterator[Stack]:
    activities = make_activities(stack.llm, stack.composio, transcripts=store, **activity_options)
    async with build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1), activities):
        yield stack
    await activities.aclose()
    await store.aclose()


def _add_big_tool(stack: Stack) -> str:
    stack.composio.add_tool(
        "MAIL_READ", "mail", "Read one email.",
        {"type": "object", "properties": {"turn": {"type": "integer"}, "call": {"type": "integer"}}},
        lambda user, args: {"turn": args.get("turn"), "body": f"<{args.get('turn')}>" + "x" * RESULT_BYTES},
    )
    stack.composio.connect("alice", "mail")
    return "mail"


@pytest.fixture(params=["local", "s3"])
async def transcript_stack(
    request: pytest.FixtureRequest, stack: Stack, tmp_path: Path
) -> AsyncIterator[tuple[Stack, TranscriptStore]]:
    store: TranscriptStore
    if request.param == "local":
        store = LocalTranscriptStore(tmp_path / "transcripts")
    else:
        s3: MotoS3 = request.getfixturevalue("moto_s3")
        store = S3TranscriptStore(s3.bucket, f"t-{uuid.uuid4().hex[:8]}", endpoint_url=s3.endpoint_url,
                                  **s3.credentials)
    async for ready in _with_worker(stack, store):
        yield ready, store


async def test_a_long_run_keeps_content_out_of_history_and_the_model_sees_it_all(
    transcript_stack: tuple[Stack, TranscriptStore],
) -> None:
    stack, store = transcript_stack
    toolkit = _add_big_tool(stack)
    stack.llm.responder = replies.scripted_agent(TURNS, "MAIL_READ")
    handle = await stack.start_run(toolkits=[toolkit], max_iterations=TURNS + 5)
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED and result.turns == TURNS + 1, result.error

    # The model got every tool result in full, the oldest included.
    last = stack.llm.requests[-1].body or {}
    results = [b["content"] for m in last["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert len(results) == TURNS
    assert all(f"<{turn}>" + "x" * RESULT_BYTES in results[turn] for turn in range(TURNS)), results[0][:300]

    # ... while the history holds none of it: 600 kB of results, quadratically resent before.
    size = history_size(await handle.fetch_history())
    assert size.largest_payload < 16_000, size
    # What is left is per-event metadata (~360 B an event: activity options, priority, headers), which
    # grows with features but not with content; inline, the results alone would be > TURNS * RESULT_BYTES.
    assert size.total_bytes < TURNS * RESULT_BYTES / 3, size
    assert size.total_bytes / size.events < 500, size

    # Progress shows what each step produced.
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    tool_steps = [s for s in progress.steps if s.kind.value == "tool"]
    assert tool_steps[-1].preview is not None and f"<{TURNS - 1}>" in tool_steps[-1].preview


async def test_a_missing_transcript_fails_the_run_clearly(stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "transcripts"
    # No cache: the worker must read the store, which the responder empties before turn 2.
    store = LocalTranscriptStore(root, cache_bytes=0)
    scripted = replies.scripted_agent(5, "NOTES_APPEND")

    def respond(body: dict[str, Any], index: int) -> replies.Reply:
        if replies.turn_of(body) == 1:
            shutil.rmtree(root / "runs")
        return scripted(body, index)

    async for ready in _with_worker(stack, store):
        toolkit = ready.add_step_tool()
        ready.llm.responder = respond
        handle = await ready.start_run(toolkits=[toolkit])
        result: AgentRunResult = await handle.result()
        assert result.status == RunStatus.FAILED
        assert result.error is not None and result.error.code == "transcript_missing"
        assert handle.id in result.error.message and "sha256:" in result.error.message
        assert ready.llm.request_count == 2  # not retried: it cannot come back


async def test_continue_as_new_carries_references_only(stack: Stack, tmp_path: Path, client: Client) -> None:
    store = LocalTranscriptStore(tmp_path / "transcripts")
    async for ready in _with_worker(stack, store):
        toolkit = _add_big_tool(ready)
        ready.llm.responder = replies.scripted_agent(55, "MAIL_READ", input_tokens=3, output_tokens=1)
        handle = await ready.start_run(toolkits=[toolkit], max_iterations=100)
        result = await handle.result()
        assert result.status == RunStatus.COMPLETED and result.turns == 56
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert len(runs) == 2  # continued as new after 50 turns
        for run in runs:
            size = history_size(await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history())
            assert size.largest_payload < 64_000, size
        # 55 results of 20 kB (~1.1 MB) exceed the 200k-token window (~800k characters): the oldest
        # went, and the model was told.
        last = ready.llm.requests[-1].body or {}
        assert "earlier tool result removed" in str(last["messages"][1:4])
        assert "<54>" in str(last["messages"][-2:])
