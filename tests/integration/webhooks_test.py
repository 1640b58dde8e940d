"""Webhooks as receivers see them: real HTTP servers on loopback verify every delivery with the
`standardwebhooks` reference library (a client this project did not write); retries carry the same
webhook-id; a receiver that never answers is given up on after the retry period, and the delivery
log says why. Real Temporal, an in-process worker, the fake Anthropic/Composio servers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from kron.contracts import names
from kron.contracts.models import ApprovalDecision, ApprovalPolicy, BudgetUpdate, RunProgress, RunStatus
from kron.contracts.webhooks import (
    QUERY_DELIVERIES,
    DeliveryLog,
    DeliveryState,
    WebhookEvent,
    delivery_id,
    delivery_workflow_id,
)
from kron.worker.main import build_worker
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.loopback import LoopbackHandler, LoopbackServer
from kron_testing.polling import eventually

from .conftest import WEBHOOK_SECRET, Stack, make_activities

# A second active secret (rotation): kron signs with both.
NEW_SECRET = "whsec_" + base64.b64encode(b"the-rotated-in-webhook-key-0123").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-key-this-receiver-never-shared").decode()
HANG = 0  # a scripted answer: accept the request, never answer it


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic()

    @property
    def envelope(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class Receiver(LoopbackServer):
    """Answers each POST with the next scripted status (then `then`); records what came."""

    def __init__(self, *script: int, then: int = 204, retry_after: str | None = None) -> None:
        super().__init__()
        self._script = list(script)
        self._then = then
        self._retry_after = retry_after
        self.received: list[Received] = []

    def _handle(self, handler: LoopbackHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.received.append(Received(body, {k.lower(): v for k, v in handler.headers.items()}, time.monotonic()))
            status = self._script.pop(0) if self._script else self._then
        if status == HANG:
            self._stopping.wait(60)
            return
        handler.send_response(status)
        if self._retry_after is not None and status == 429:
            handler.send_header("Retry-After", self._retry_after)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def of_type(self, event: WebhookEvent) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.envelope["type"] == event.value]


@asynccontextmanager
async def worker(stack: Stack, **options: Any) -> AsyncIterator[Stack]:
    """An in-process worker whose webhooks are signed with two active secrets (a rotation)."""
    options.setdefault("webhook_secret", f"{WEBHOOK_SECRET} {NEW_SECRET}")
    activities = make_activities(stack.llm, stack.composio, **options)
    async with build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1), activities):
        yield stack
    await activities.aclose()


@pytest.fixture
async def rotating(stack: Stack) -> AsyncIterator[Stack]:
    async with worker(stack) as running:
        yield running


async def received(receiver: Receiver, event: WebhookEvent, count: int = 1, timeout: float = 20) -> list[Received]:
    async def check() -> list[Received]:
        got = receiver.of_type(event)
        assert len(got) >= count, f"{len(got)} {event.value} deliveries"
        return got

    return await eventually(check, timeout=timeout)


def verified(delivery: Received, secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(delivery.body, delivery.headers)
    return payload


async def delivery_log(stack: Stack, task_id: str) -> DeliveryLog:
    handle = stack.client.get_workflow_handle(delivery_workflow_id(task_id))
    try:
        log: DeliveryLog = await handle.query(QUERY_DELIVERIES, result_type=DeliveryLog)
    except RPCError as error:
        assert error.status is not RPCStatusCode.NOT_FOUND, "no delivery workflow (yet)"
        raise
    return log


async def closed_log(stack: Stack, task_id: str) -> DeliveryLog:
    """The log the delivery workflow ends with (it ends once the run's last event is done)."""
    log: DeliveryLog = await stack.client.get_workflow_handle(
        delivery_workflow_id(task_id), result_type=DeliveryLog
    ).result()
    return log


async def pending_turn(handle: WorkflowHandle[Any, Any]) -> int:
    async def check() -> int:
        progress: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        assert progress.pending_approval is not None
        return progress.pending_approval.turn

    return await eventually(check, timeout=20)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- every event type, verified by the reference library


async def test_waiting_and_completed_events_verify_and_say_what_they_wait_for(rotating: Stack) -> None:
    toolkit = rotating.add_step_tool()
    rotating.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    with Receiver() as receiver:
        handle = await rotating.start_run(
            toolkits=[toolkit], approval=ApprovalPolicy(require_for=["notes"]), callback_url=receiver.url,
            webhook_events=[WebhookEvent.RUN_WAITING, WebhookEvent.RUN_COMPLETED],
        )
        [waiting] = await received(receiver, WebhookEvent.RUN_WAITING)
        payload = verified(waiting)
        assert payload["data"]["task_id"] == handle.id
        assert payload["data"]["waiting"]["reason"] == "approval"
        assert [c["name"] for c in payload["data"]["waiting"]["approval"]["calls"]] == ["NOTES_APPEND"]
        assert payload["data"]["result"]["status"] == "waiting"
        turn = payload["data"]["waiting"]["approval"]["turn"]
        assert waiting.headers["webhook-id"] == delivery_id(handle.id, WebhookEvent.RUN_WAITING, f"approval/{turn}")

        await handle.signal(names.SIGNAL_APPROVE, ApprovalDecision(approved=True, turn=turn))
        assert (await handle.result()).status is RunStatus.COMPLETED
        [completed] = await received(receiver, WebhookEvent.RUN_COMPLETED)
        assert verified(completed)["data"]["result"]["status"] == "completed"
        assert completed.headers["webhook-id"] == delivery_id(handle.id, WebhookEvent.RUN_COMPLETED)
        # The delivery workflow ends once the run's last event is delivered; its log stays readable.
        closed = await closed_log(rotating, handle.id)
        assert [(d.event, d.state, d.attempts, d.last_status_code) for d in closed.deliveries] == [
            (WebhookEvent.RUN_WAITING, DeliveryState.DELIVERED, 1, 204),
            (WebhookEvent.RUN_COMPLETED, DeliveryState.DELIVERED, 1, 204),
        ]
        assert (await delivery_log(rotating, handle.id)) == closed
        assert len(receiver.received) == 2


async def test_paused_and_cancelled_events_verify(rotating: Stack) -> None:
    rotating.add_step_tool()
    rotating.llm.responder = replies.scripted_agent(5, "NOTES_APPEND")
    with Receiver() as receiver:
        # $0.0004 a call: paused after the second.
        handle = await rotating.start_run(
            toolkits=["notes"], budget_usd=0.0007, callback_url=receiver.url,
            webhook_events=[WebhookEvent.RUN_PAUSED, WebhookEvent.RUN_CANCELLED],
        )
        [paused] = await received(receiver, WebhookEvent.RUN_PAUSED)
        data = verified(paused)["data"]
        assert data["paused"]["budget"] == "run" and data["paused"]["limit_usd"] == 0.0007
        assert data["result"]["status"] == "paused"
        await handle.signal(names.SIGNAL_CANCEL)
        assert (await handle.result()).status is RunStatus.CANCELLED
        [cancelled] = await received(receiver, WebhookEvent.RUN_CANCELLED)
        assert verified(cancelled)["data"]["result"]["status"] == "cancelled"
        assert {r.envelope["type"] for r in receiver.received} == {"run.paused", "run.cancelled"}


async def test_failed_events_verify_and_only_chosen_types_are_sent(rotating: Stack) -> None:
    rotating.llm.enqueue(replies.error(400, "invalid_request_error", "prompt is malformed"))
    with Receiver() as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)  # default: terminal events
        assert (await handle.result()).status is RunStatus.FAILED
        [failed] = await received(receiver, WebhookEvent.RUN_FAILED)
        payload = verified(failed)
        assert payload["data"]["result"]["error"]["code"] == "model_bad_request"
        assert set(payload) == {"type", "timestamp", "data"}

    # A run that chose no terminal event sends nothing, and leaves no delivery workflow behind.
    rotating.llm.enqueue(replies.text("quiet"))
    with Receiver() as quiet:
        handle = await rotating.start_run(callback_url=quiet.url, webhook_events=[WebhookEvent.RUN_PAUSED])
        assert (await handle.result()).status is RunStatus.COMPLETED
        await asyncio.sleep(1.0)
        assert quiet.received == []


async def test_tampered_stale_and_wrongly_keyed_deliveries_are_rejected(rotating: Stack) -> None:
    rotating.llm.enqueue(replies.text("all good"))
    with Receiver() as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)
        await handle.result()
        [delivery] = await received(receiver, WebhookEvent.RUN_COMPLETED)
    verified(delivery)
    tampered = delivery.body.replace(b"all good", b"all bad!")
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(tampered, delivery.headers)
    # Captured and replayed more than 5 minutes later: the timestamp is part of what is signed.
    stale = {**delivery.headers, "webhook-timestamp": str(int(delivery.headers["webhook-timestamp"]) - 6 * 60)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(WEBHOOK_SECRET).verify(delivery.body, stale)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(delivery.body, delivery.headers)


async def test_rotation_both_secrets_sign_and_each_verifies(rotating: Stack) -> None:
    rotating.llm.enqueue(replies.text("rotated"))
    with Receiver() as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)
        await handle.result()
        [delivery] = await received(receiver, WebhookEvent.RUN_COMPLETED)
    signatures = delivery.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (WEBHOOK_SECRET, NEW_SECRET):
        assert verified(delivery, secret)["data"]["result"]["output"] == "rotated"
    # Each signature alone verifies under its own secret (not one good one carrying the other).
    for signature, secret in zip(signatures, (WEBHOOK_SECRET, NEW_SECRET), strict=True):
        Webhook(secret).verify(delivery.body, {**delivery.headers, "webhook-signature": signature})


# --- retries


async def test_a_receiver_failing_twice_gets_three_deliveries_with_one_webhook_id(rotating: Stack) -> None:
    errors_before = _sample("kron_webhooks_total", outcome="error")
    rotating.llm.enqueue(replies.text("third time lucky"))
    with Receiver(500, 500, then=200) as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)
        result = await handle.result()  # the run ended at once: it does not wait for its receiver
        assert result.status is RunStatus.COMPLETED
        deliveries = await received(receiver, WebhookEvent.RUN_COMPLETED, count=3)
        log = await closed_log(rotating, handle.id)
    assert len(deliveries) == 3
    assert {d.headers["webhook-id"] for d in deliveries} == {delivery_id(handle.id, WebhookEvent.RUN_COMPLETED)}
    assert len({d.body for d in deliveries}) == 1  # the same event, byte for byte
    for delivery in deliveries:
        verified(delivery)
    # Backoff: 1 s, then 2 s (Temporal timers never fire early).
    assert deliveries[1].at - deliveries[0].at >= 0.9 and deliveries[2].at - deliveries[1].at >= 1.9
    [entry] = log.deliveries
    assert (entry.state, entry.attempts, entry.last_status_code, entry.last_error) == (
        DeliveryState.DELIVERED, 3, 200, None
    )
    assert entry.next_attempt_at is None
    assert _sample("kron_webhooks_total", outcome="error") >= errors_before + 2


async def test_a_429_waits_as_long_as_retry_after_says(rotating: Stack) -> None:
    rotating.llm.enqueue(replies.text("patience"))
    with Receiver(429, then=204, retry_after="3") as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)
        await handle.result()
        first, second = await received(receiver, WebhookEvent.RUN_COMPLETED, count=2)
    assert second.at - first.at >= 2.9  # not the 1 s backoff
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


async def test_a_receiver_that_never_answers_is_given_up_after_the_retry_period(stack: Stack) -> None:
    async with worker(stack, webhook_retry_seconds=4, webhook_timeout_seconds=1.0):
        stack.llm.enqueue(replies.text("nobody listens"))
        with Receiver(then=HANG) as receiver:
            handle = await stack.start_run(callback_url=receiver.url)
            assert (await handle.result()).status is RunStatus.COMPLETED
            log = await closed_log(stack, handle.id)
            attempts_seen = len(receiver.received)
            await asyncio.sleep(3.0)
            assert len(receiver.received) == attempts_seen  # nothing after giving up
    [entry] = log.deliveries
    assert entry.state is DeliveryState.FAILED
    assert entry.last_status_code is None and entry.next_attempt_at is None
    assert entry.last_error is not None
    assert entry.last_error.startswith("timeout") and "the retry period of 4 s is over" in entry.last_error
    # 1 s timeout + 1 s backoff, 1 s timeout + 2 s backoff would end past 4 s: two attempts.
    assert entry.attempts == attempts_seen == 2
    assert entry.first_attempt_at is not None and entry.last_attempt_at is not None


async def test_a_rejecting_receiver_is_not_retried(rotating: Stack) -> None:
    rotating.llm.enqueue(replies.text("go away"))
    with Receiver(410, then=204) as receiver:
        handle = await rotating.start_run(callback_url=receiver.url)
        await handle.result()
        log = await closed_log(rotating, handle.id)
        assert len(receiver.received) == 1
    [entry] = log.deliveries
    assert (entry.state, entry.attempts, entry.last_status_code) == (DeliveryState.FAILED, 1, 410)


async def test_the_public_host_rule_holds_for_every_event_type(stack: Stack) -> None:
    """Production default (no private networks): a loopback callback_url gets no event at all, and
    the log says each one was refused."""
    async with worker(stack, webhook_allow_private_networks=False):
        toolkit = stack.add_step_tool()
        stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
        with Receiver() as receiver:
            handle = await stack.start_run(
                toolkits=[toolkit], approval=ApprovalPolicy(require_for=["notes"]), callback_url=receiver.url,
                webhook_events=[WebhookEvent.RUN_WAITING, WebhookEvent.RUN_COMPLETED],
            )

            async def waiting_refused() -> None:
                log = await delivery_log(stack, handle.id)
                assert [(d.event, d.state) for d in log.deliveries] == [
                    (WebhookEvent.RUN_WAITING, DeliveryState.REFUSED)
                ]

            await eventually(waiting_refused, timeout=20)
            await handle.signal(names.SIGNAL_APPROVE, ApprovalDecision(approved=True, turn=await pending_turn(handle)))
            await handle.result()
            log = await closed_log(stack, handle.id)
            assert receiver.received == []
    assert [(d.state, d.attempts) for d in log.deliveries] == [(DeliveryState.REFUSED, 1)] * 2
    assert all("public hosts only" in (d.last_error or "") for d in log.deliveries)


async def test_a_raised_budget_resumes_and_a_second_pause_has_its_own_id(rotating: Stack) -> None:
    rotating.add_step_tool()
    rotating.llm.responder = replies.scripted_agent(8, "NOTES_APPEND")
    with Receiver() as receiver:
        handle = await rotating.start_run(
            toolkits=["notes"], budget_usd=0.0007, callback_url=receiver.url,
            webhook_events=[WebhookEvent.RUN_PAUSED],
        )
        await received(receiver, WebhookEvent.RUN_PAUSED)
        await handle.signal(names.SIGNAL_SET_BUDGET, BudgetUpdate(budget_usd=0.0015))
        pauses = await received(receiver, WebhookEvent.RUN_PAUSED, count=2)
        await handle.signal(names.SIGNAL_CANCEL)
        await handle.result()
    assert len({p.headers["webhook-id"] for p in pauses}) == 2
