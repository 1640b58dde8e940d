"""AgentWorkflow against a real Temporal server, the real SDKs and fake Anthropic/Composio servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from kron.contracts import names
from kron.contracts.models import (
    DEFAULT_CONTEXT_WINDOW_TOKENS,
    ApprovalDecision,
    ApprovalPolicy,
    RunProgress,
    RunStatus,
    StepKind,
)
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies

from .conftest import ANTHROPIC_KEY, WEBHOOK_SECRET, Stack, make_activities


def _sample(name: str, **labels: str) -> float:
    """A counter's value in this process's registry (the in-process worker's metrics)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_run_with_parallel_tool_calls_completes(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(3, "NOTES_APPEND", parallel=2,
                                                         final_text="Appended six notes.")
    tools_ok_before = _sample("kron_tool_calls_total", outcome="ok")
    tokens_out_before = _sample("kron_model_tokens_total", direction="output")
    completed_before = _sample("kron_runs_total", status="completed")
    handle = await running_stack.start_run(toolkits=[toolkit])
    result = await handle.result()

    assert result.status == RunStatus.COMPLETED
    assert result.output == "Appended six notes."
    assert result.turns == 4
    assert result.usage.model_calls == 4 and result.usage.tool_calls == 6
    assert result.usage.input_tokens == 400 and result.usage.output_tokens == 80
    assert running_stack.composio.execution_count("NOTES_APPEND") == 6
    # The model saw the Composio tool definition, and every result went back to it.
    first = running_stack.llm.requests[0].body
    assert first is not None and [t["name"] for t in first["tools"]] == ["NOTES_APPEND"]
    last = running_stack.llm.requests[-1].body
    assert last is not None
    tool_results = [b for m in last["messages"] if isinstance(m["content"], list)
                    for b in m["content"] if b.get("type") == "tool_result"]
    assert len(tool_results) == 6 and not any(b.get("is_error") for b in tool_results)

    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert progress.status == RunStatus.COMPLETED
    assert [s.kind for s in progress.steps].count(StepKind.TOOL) == 6
    assert _sample("kron_tool_calls_total", outcome="ok") - tools_ok_before == 6
    assert _sample("kron_model_tokens_total", direction="output") - tokens_out_before == 80
    assert _sample("kron_runs_total", status="completed") - completed_before == 1
    assert await handle.query(names.QUERY_STATUS, result_type=RunStatus) == RunStatus.COMPLETED


async def test_a_failing_tool_is_an_error_result_for_that_call_only(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(
        1, "NOTES_APPEND", parallel=2,
        tool_input_fn=lambda turn, i: {"turn": turn, "call": i, "fail": i == 1},
    )
    result = await (await running_stack.start_run(toolkits=[toolkit])).result()

    assert result.status == RunStatus.COMPLETED
    last = running_stack.llm.requests[-1].body
    assert last is not None
    blocks = last["messages"][-1]["content"]
    assert [b.get("is_error", False) for b in blocks] == [False, True]
    assert "disk full" in blocks[1]["content"]


async def test_a_read_only_tool_is_retried_when_its_backend_fails(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool("NOTES_LIST")
    running_stack.composio.fail_next(1, status=503)  # first attempt fails, the retry succeeds
    running_stack.llm.responder = replies.scripted_agent(1, "NOTES_LIST")
    result = await (await running_stack.start_run(toolkits=[toolkit])).result()
    assert result.status == RunStatus.COMPLETED
    assert running_stack.composio.execution_count("NOTES_LIST") == 1
    last = running_stack.llm.requests[-1].body
    assert last is not None and "is_error" not in last["messages"][-1]["content"][0]


async def test_rate_limit_is_retried_after_the_servers_retry_after(running_stack: Stack) -> None:
    running_stack.llm.enqueue(
        replies.error(429, "rate_limit_error", "slow down", retry_after=3),
        replies.text("finally"),
    )
    result = await (await running_stack.start_run()).result()

    assert result.status == RunStatus.COMPLETED and result.output == "finally"
    first, second = running_stack.llm.requests
    assert first.status == 429 and second.status == 200
    # The retry policy's own first interval is 1 s: only retry-after explains a gap of >= 3 s.
    assert second.received_at - first.received_at >= 2.9


async def test_overload_and_server_errors_are_retried(running_stack: Stack) -> None:
    running_stack.llm.enqueue(
        replies.error(529, "overloaded_error", "busy"),
        replies.error(500, "api_error", "oops"),
        replies.text("ok"),
    )
    result = await (await running_stack.start_run()).result()
    assert result.status == RunStatus.COMPLETED
    assert [r.status for r in running_stack.llm.requests] == [529, 500, 200]


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(400, "invalid_request_error", "model_bad_request"),
     (401, "authentication_error", "model_auth"),
     (403, "permission_error", "model_permission")],
)
async def test_client_errors_fail_fast_with_a_clear_error(
    running_stack: Stack, status: int, error_type: str, code: str
) -> None:
    running_stack.llm.enqueue(replies.error(status, error_type, f"nope ({error_type})"))
    handle = await running_stack.start_run()
    started = time.monotonic()
    result = await handle.result()

    assert time.monotonic() - started < 5
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.code == code
    assert result.error.status_code == status and error_type in result.error.message
    assert running_stack.llm.request_count == 1  # not retried
    assert ANTHROPIC_KEY not in result.model_dump_json()


async def test_max_iterations_ends_the_run(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(100, "NOTES_APPEND")
    result = await (await running_stack.start_run(toolkits=[toolkit], max_iterations=3)).result()
    assert result.status == RunStatus.MAX_ITERATIONS
    assert running_stack.llm.request_count == 3 and result.turns == 3


async def test_token_budget_ends_the_run(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    # 120 tokens per model call: a budget of 250 allows three calls (0, 120, 240 < 250).
    running_stack.llm.responder = replies.scripted_agent(100, "NOTES_APPEND")
    result = await (await running_stack.start_run(toolkits=[toolkit], token_budget=250)).result()
    assert result.status == RunStatus.BUDGET_EXCEEDED
    assert running_stack.llm.request_count == 3
    assert result.usage.total_tokens == 360


async def test_graceful_cancel_finishes_the_current_step_and_returns_a_partial_result(
    running_stack: Stack,
) -> None:
    toolkit = running_stack.add_step_tool()
    script = replies.scripted_agent(10, "NOTES_APPEND")
    running_stack.llm.responder = lambda body, i: (
        replies.delay(1.5, script(body, i)) if replies.turn_of(body) == 1 else script(body, i)
    )
    handle = await running_stack.start_run(toolkits=[toolkit])
    await running_stack.wait_for_model_requests(2, timeout=20)  # turn 1's call is in flight
    await handle.signal(names.SIGNAL_CANCEL)
    result = await handle.result()

    assert result.status == RunStatus.CANCELLED
    assert result.turns == 2  # the in-flight model call finished; nothing after it ran
    assert running_stack.llm.request_count == 2
    assert running_stack.composio.execution_count() == 1


async def test_hard_cancel_reaches_a_running_model_call(running_stack: Stack) -> None:
    running_stack.llm.enqueue(replies.delay(60, replies.text("too late")))
    handle = await running_stack.start_run()
    await running_stack.wait_for_model_requests(1, timeout=20)
    started = time.monotonic()
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    # Noticed through the activity's next heartbeat, not after the 60 s reply.
    assert time.monotonic() - started < 10
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert await handle.query(names.QUERY_STATUS, result_type=RunStatus) == RunStatus.CANCELLED


async def test_a_conversation_past_the_context_window_drops_its_oldest_results_and_says_so(
    running_stack: Stack,
) -> None:
    # 12 turns of 10 emails of ~19 kB: 2.3 MB of tool results, ~575k tokens (characters/4): over the
    # default 200k-token context window. Content is out of Temporal history (transcripts-v1), so
    # nothing hits Temporal's 2 MB payload limit; the context guard keeps each request in the window.
    running_stack.composio.add_tool(
        "MAIL_READ", "mail", "Read one email.",
        {"type": "object", "properties": {"turn": {"type": "integer"}, "call": {"type": "integer"}}},
        lambda user, args: {"turn": args.get("turn"), "call": args.get("call"), "body": "x" * 19_000},
    )
    running_stack.composio.connect("alice", "mail")
    running_stack.llm.responder = replies.scripted_agent(12, "MAIL_READ", parallel=10)
    handle = await running_stack.start_run(toolkits=["mail"], max_iterations=50)
    result = await asyncio.wait_for(handle.result(), timeout=90)

    assert result.status == RunStatus.COMPLETED, result.error
    assert result.usage.tool_calls == 120 and result.turns == 13
    sizes = [len(json.dumps(r.body, separators=(",", ":"))) for r in running_stack.llm.requests]
    assert max(sizes) / 4 + 4096 <= DEFAULT_CONTEXT_WINDOW_TOKENS * 1.02, sizes
    last = json.dumps(running_stack.llm.requests[-1].body)
    assert "earlier tool result removed" in last  # the oldest results were cut ...
    assert last.count("x" * 19_000) >= 10  # ... the newest turn's were not
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert progress.context_note is not None and "context window" in progress.context_note


async def test_two_hundred_turns_continue_as_new_and_lose_nothing(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(
        210, "NOTES_APPEND", input_tokens=3, output_tokens=1
    )
    handle = await running_stack.start_run(toolkits=[toolkit], max_iterations=500)
    result = await handle.result()

    assert result.status == RunStatus.COMPLETED
    assert result.turns == 211 and result.usage.tool_calls == 210
    assert set(running_stack.llm.count_by_turn().values()) == {1}
    assert running_stack.composio.execution_count() == 210
    runs = [w async for w in running_stack.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 5  # 50 turns per history
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert len(progress.steps) == 211 + 210


class _WebhookReceiver:
    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((body, dict(self.headers.items())))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def webhook() -> Iterator[_WebhookReceiver]:
    receiver = _WebhookReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


async def test_completion_webhook_is_signed(running_stack: Stack, webhook: _WebhookReceiver) -> None:
    running_stack.llm.enqueue(replies.text("all good"))
    handle = await running_stack.start_run(callback_url=webhook.url)
    await handle.result()
    for _ in range(50):
        if webhook.bodies:
            break
        await asyncio.sleep(0.1)
    body, headers = webhook.bodies[0]
    # Standard Webhooks, verified by the reference library (see webhooks_test.py for the rest).
    payload = Webhook(WEBHOOK_SECRET).verify(body, headers)
    assert payload["type"] == "run.completed"
    assert payload["data"]["task_id"] == handle.id and payload["data"]["result"]["output"] == "all good"
    assert "X-Kron-Signature" not in headers


async def test_a_failing_webhook_never_changes_the_result(running_stack: Stack) -> None:
    running_stack.llm.enqueue(replies.text("still fine"))
    handle = await running_stack.start_run(callback_url="http://127.0.0.1:9/nothing-listens-here")
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED and result.output == "still fine"


async def test_webhooks_to_private_addresses_are_refused_by_default(
    stack: Stack, webhook: _WebhookReceiver
) -> None:
    """Production default: a callback_url on loopback (as on any private or link-local network, cloud
    metadata included) gets no POST; the refusal is counted and the run's result is unchanged."""
    activities = make_activities(stack.llm, stack.composio, webhook_allow_private_networks=False)
    refused_before = _sample("kron_webhooks_total", outcome="refused")
    worker = build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1), activities)
    async with worker:
        stack.llm.enqueue(replies.text("done"))
        handle = await stack.start_run(callback_url=webhook.url)
        result = await handle.result()
        for _ in range(50):
            if _sample("kron_webhooks_total", outcome="refused") > refused_before:
                break
            await asyncio.sleep(0.1)
    await activities.aclose()
    assert result.status == RunStatus.COMPLETED and result.output == "done"
    assert _sample("kron_webhooks_total", outcome="refused") == refused_before + 1
    assert webhook.bodies == []


async def _wait_until_waiting(handle: Any) -> RunProgress:
    for _ in range(200):
        progress: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.status == RunStatus.WAITING:
            return progress
        await asyncio.sleep(0.05)
    raise AssertionError("the run never waited for approval")


async def test_gated_tool_calls_wait_for_approval_and_run_when_approved(
    running_stack: Stack,
) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    handle = await running_stack.start_run(
        toolkits=[toolkit], approval=ApprovalPolicy(require_for=["notes"])
    )
    progress = await _wait_until_waiting(handle)
    assert progress.pending_approval is not None
    assert [c.name for c in progress.pending_approval.calls] == ["NOTES_APPEND"]
    assert running_stack.composio.execution_count() == 0  # nothing ran before the decision

    turn = progress.pending_approval.turn
    await handle.signal(names.SIGNAL_APPROVE, ApprovalDecision(approved=True, turn=turn))
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED
    assert running_stack.composio.execution_count() == 1


async def test_denied_or_timed_out_calls_are_reported_to_the_model_and_never_run(
    running_stack: Stack,
) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND")
    handle = await running_stack.start_run(
        toolkits=[toolkit],
        approval=ApprovalPolicy(require_for=["NOTES_APPEND"], timeout_seconds=2),
    )
    waiting = await _wait_until_waiting(handle)
    assert waiting.pending_approval is not None
    turn = waiting.pending_approval.turn
    await handle.signal(
        names.SIGNAL_APPROVE, ApprovalDecision(approved=False, turn=turn, reason="not today")
    )
    await _wait_until_waiting(handle)  # turn 1 asks again; nobody answers: times out after 2 s
    result = await handle.result()

    assert result.status == RunStatus.COMPLETED
    assert running_stack.composio.execution_count() == 0
    results = [
        b["content"]
        for m in (running_stack.llm.requests[-1].body or {})["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    assert "not today" in results[0] and "no decision within 2 s" in results[1]
