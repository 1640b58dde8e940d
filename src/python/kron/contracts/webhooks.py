"""Webhooks: the event types a run or schedule sends, the envelope a receiver gets, the stable
delivery ids, and the delivery log (`GET /tasks/{id}/deliveries`). One place for all of it.

Deliveries follow the Standard Webhooks specification (standardwebhooks.com): headers `webhook-id`
(stable per event: a retry carries the same one), `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per active secret), body the JSON envelope
`{type, timestamp, data}`. The worker signs and sends (kron.worker.webhooks).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, Field

# The workflow (one per run, or per schedule fire) that delivers its events: its state is the log.
WEBHOOK_DELIVERY_WORKFLOW: Final = "WebhookDelivery"
SIGNAL_DELIVER: Final = "deliver"  # payload: WebhookMessage
QUERY_DELIVERIES: Final = "deliveries"  # answer: DeliveryLog
# A failed delivery is retried (with backoff) for this long after its first attempt, by default.
DEFAULT_WEBHOOK_RETRY_SECONDS: Final = 24 * 3600


class WebhookEvent(StrEnum):
    """Event types (the envelope's `type`). Their names and `data` shapes are a contract: a change
    that breaks a receiver gets a new type name (e.g. `run.completed.v2`), never a changed one."""

    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"  # failed, max_iterations or budget_exceeded (data.result.status says)
    RUN_CANCELLED = "run.cancelled"
    RUN_WAITING = "run.waiting"  # for a human: an approval or an unknown tool outcome (data.waiting)
    RUN_PAUSED = "run.paused"  # a USD budget is reached (data.paused)
    SCHEDULE_FIRE_SKIPPED = "schedule.fire_skipped"  # the previous fire was still going (Forbid)
    SCHEDULE_FIRE_FAILED = "schedule.fire_failed"  # the fire's toolkit preflight failed: no run

    @property
    def is_run_event(self) -> bool:
        return self.value.startswith("run.")


# What a run (dispatch) or a schedule sends when it does not choose: how it ended. A schedule's
# fires also say when one could not start at all.
TERMINAL_RUN_EVENTS: Final = (WebhookEvent.RUN_COMPLETED, WebhookEvent.RUN_FAILED, WebhookEvent.RUN_CANCELLED)
DEFAULT_RUN_EVENTS: Final = TERMINAL_RUN_EVENTS
DEFAULT_SCHEDULE_EVENTS: Final = (*TERMINAL_RUN_EVENTS, WebhookEvent.SCHEDULE_FIRE_FAILED)
RUN_EVENTS: Final = tuple(e for e in WebhookEvent if e.is_run_event)


def _run_events_only(events: list[WebhookEvent]) -> list[WebhookEvent]:
    others = [e.value for e in events if not e.is_run_event]
    if others:
        raise ValueError(f"a run sends run.* events only, not {', '.join(others)}")
    return list(dict.fromkeys(events))


def _deduplicated(events: list[WebhookEvent]) -> list[WebhookEvent]:
    return list(dict.fromkeys(events))


# What a dispatch may choose (run events), and a schedule (also its fires' own events).
RunWebhookEvents = Annotated[list[WebhookEvent], AfterValidator(_run_events_only), Field(max_length=16)]
ScheduleWebhookEvents = Annotated[list[WebhookEvent], AfterValidator(_deduplicated), Field(max_length=16)]


def chosen(events: list[WebhookEvent] | None, event: WebhookEvent, *, schedule: bool = False) -> bool:
    """Whether a run or schedule that chose `events` (None: the default) sends `event`."""
    if events is None:
        return event in (DEFAULT_SCHEDULE_EVENTS if schedule else DEFAULT_RUN_EVENTS)
    return event in events


class WebhookEnvelope(BaseModel):
    """The body of every delivery."""

    type: WebhookEvent
    timestamp: datetime  # when the event happened (webhook-timestamp is when the attempt was sent)
    data: dict[str, Any]


def delivery_id(subject_id: str, event: WebhookEvent, occurrence: str = "") -> str:
    """The `webhook-id` of one event: derived from the run (or fire) id, the event type and which
    occurrence it is (e.g. the turn of an approval), never random, so every retry carries the same
    id and a receiver can de-duplicate."""
    digest = hashlib.sha256(f"{subject_id}\0{event.value}\0{occurrence}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def delivery_workflow_id(subject_id: str) -> str:
    """The delivery workflow of a run (its task id) or a schedule fire (its fire id)."""
    return f"{subject_id}.webhooks"


class WebhookMessage(BaseModel):
    """One event to deliver: signal `deliver` of the delivery workflow. `body` is the envelope as
    sent (the same bytes at every attempt). `final`: the subject's last event (a run's terminal
    one); the delivery workflow ends once it has seen it and has nothing left to send. A final
    message with no `event` only says so (the terminal event was not chosen)."""

    webhook_id: str | None = None
    event: WebhookEvent | None = None
    url: str | None = None
    body: str = ""
    final: bool = False


def webhook_message(
    subject_id: str,
    event: WebhookEvent,
    *,
    url: str,
    timestamp: datetime,
    data: dict[str, Any],
    occurrence: str = "",
    final: bool,
) -> WebhookMessage:
    """One event of a run (or fire) `subject_id`, ready for its delivery workflow: the envelope as it
    will be sent and its stable `webhook-id`."""
    envelope = WebhookEnvelope(type=event, timestamp=timestamp, data=data)
    return WebhookMessage(
        webhook_id=delivery_id(subject_id, event, occurrence),
        event=event,
        url=url,
        body=envelope.model_dump_json(),
        final=final,
    )


class DeliveryState(StrEnum):
    PENDING = "pending"  # being sent, or waiting for its next attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: a 4xx other than 408/429, or the retry period is over
    REFUSED = "refused"  # the callback URL is not allowed (a non-public host): never sent


class Delivery(BaseModel):
    """One event's delivery, as the log shows it."""

    event: WebhookEvent
    webhook_id: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, description="Why the last attempt failed (no secrets).")
    next_attempt_at: datetime | None = None


class DeliveryLog(BaseModel):
    """Every webhook event of a run, oldest first (`GET /tasks/{id}/deliveries`)."""

    deliveries: list[Delivery] = Field(default_factory=list)

