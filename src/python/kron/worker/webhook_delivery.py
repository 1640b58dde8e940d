"""`WebhookDeliveryWorkflow`: delivers the webhook events of one run (or one schedule fire) and
keeps their delivery log. See kron.worker.webhooks for the attempt itself and the overall design.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from kron.contracts.webhooks import (
        QUERY_DELIVERIES,
        SIGNAL_DELIVER,
        WEBHOOK_DELIVERY_WORKFLOW,
        Delivery,
        DeliveryLog,
        DeliveryState,
        WebhookMessage,
    )
    from kron.worker.webhooks import AttemptInput, AttemptOutcome, AttemptResult, WebhookActivities

# Backoff between attempts: 1 s, 2 s, 4 s ... at most an hour (unless Retry-After says otherwise).
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 3600.0
# One attempt per activity call: the workflow owns the retries, so each attempt is in the log.
ATTEMPT_RETRY = RetryPolicy(maximum_attempts=1)
ATTEMPT_TIMEOUT = timedelta(minutes=2)  # above any KRON_WEBHOOK_TIMEOUT_SECONDS (<= 60)


@workflow.defn(name=WEBHOOK_DELIVERY_WORKFLOW)
class WebhookDeliveryWorkflow:
    """Delivers a run's (or a fire's) events, each on its own, and keeps the log. Pure: the clock
    is workflow time, the sending is the activity's."""

    def __init__(self) -> None:
        self._log: dict[str, Delivery] = {}  # by webhook id, in arrival order
        self._queue: list[WebhookMessage] = []
        self._final = False
        self._sending: list[asyncio.Task[None]] = []

    @workflow.run
    async def run(self, first: WebhookMessage | None = None) -> DeliveryLog:
        if first is not None:
            self.deliver(first)
        while True:
            await workflow.wait_condition(
                lambda: bool(self._queue) or (self._final and all(t.done() for t in self._sending))
            )
            if not self._queue:
                break
            for message in self._queue:
                self._sending.append(asyncio.create_task(self._send(message)))
            self._queue.clear()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.deliveries()

    @workflow.signal(name=SIGNAL_DELIVER)
    def deliver(self, message: WebhookMessage) -> None:
        """An event to send. The same webhook id twice (a retried notify step) is sent once."""
        self._final = self._final or message.final
        if message.webhook_id is None or message.event is None or message.url is None:
            return
        if message.webhook_id in self._log:
            return
        self._log[message.webhook_id] = Delivery(event=message.event, webhook_id=message.webhook_id)
        self._queue.append(message)

    @workflow.query(name=QUERY_DELIVERIES)
    def deliveries(self) -> DeliveryLog:
        return DeliveryLog(deliveries=[d.model_copy() for d in self._log.values()])

    async def _send(self, message: WebhookMessage) -> None:
        assert message.webhook_id is not None and message.url is not None
        delivery = self._log[message.webhook_id]
        backoff = FIRST_BACKOFF_SECONDS
        attempt = AttemptInput(url=message.url, webhook_id=message.webhook_id, body=message.body)
        while True:
            now = workflow.now()
            delivery.attempts += 1
            delivery.first_attempt_at = delivery.first_attempt_at or now
            delivery.last_attempt_at, delivery.next_attempt_at = now, None
            try:
                outcome = await workflow.execute_activity_method(
                    WebhookActivities.deliver_webhook, attempt,
                    start_to_close_timeout=ATTEMPT_TIMEOUT, retry_policy=ATTEMPT_RETRY,
                )
            except ActivityError as error:  # the worker died mid-attempt, or the attempt timed out
                cause = error.cause
                reason = cause.message if isinstance(cause, ApplicationError) else type(cause or error).__name__
                outcome = AttemptOutcome(result=AttemptResult.RETRY, error=f"attempt did not finish: {reason}")
            delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
            if outcome.result is AttemptResult.DELIVERED:
                delivery.state = DeliveryState.DELIVERED
                return
            if outcome.result is not AttemptResult.RETRY:
                delivery.state = (
                    DeliveryState.REFUSED if outcome.result is AttemptResult.REFUSED else DeliveryState.FAILED
                )
                return
            delay = outcome.retry_after_seconds if outcome.retry_after_seconds is not None else backoff
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            next_at = workflow.now() + timedelta(seconds=delay)
            deadline = delivery.first_attempt_at + timedelta(seconds=outcome.retry_period_seconds)
            if next_at > deadline:
                delivery.state = DeliveryState.FAILED
                delivery.last_error = (
                    f"{outcome.error}; given up after {delivery.attempts} attempts: "
                    f"the retry period of {outcome.retry_period_seconds} s is over"
                )
                return
            delivery.next_attempt_at = next_at
            await workflow.sleep(timedelta(seconds=delay))
