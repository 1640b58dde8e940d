"""Webhook deliveries, one HTTP attempt per activity call (`WebhookActivities.deliver_webhook`).

A run never waits for its receiver: its `notify_run_finished` step hands each event to the run's
delivery workflow (kron.worker.webhook_delivery; signal-with-start, id `<task id>.webhooks`) and
returns. The delivery workflow sends each event until the receiver answers 2xx, retrying connection
errors, timeouts, 408, 429 (honouring Retry-After) and 5xx with exponential backoff for a bounded
period (KRON_WEBHOOK_RETRY_SECONDS, default 24 h, from the event's first attempt). Its state is the
delivery log the gateway shows (`GET /tasks/{id}/deliveries`). It ends once the run's last event
is done; the log is its result and still answers the `deliveries` query.

The public-host rule (kron.common.callback_urls) is checked at every attempt, with the address
pinned, so a name that later resolves somewhere private is refused then.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx
from pydantic import BaseModel
from temporalio import activity

from kron.common.callback_urls import CallbackRefused, CallbackUnresolved, pinned_request
from kron.common.logging import get_logger
from kron.contracts.webhooks import DEFAULT_WEBHOOK_RETRY_SECONDS
from kron.worker import metrics
from kron.worker.webhook_signing import WebhookSigner

log = get_logger(__name__)

# Status codes worth another attempt; any other non-2xx is the receiver's final answer.
RETRYABLE_STATUS = frozenset({408, 429})


class AttemptResult(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # connection error, timeout, 408, 429, 5xx
    REJECTED = "rejected"  # another non-2xx: the receiver refuses it
    REFUSED = "refused"  # the URL is not allowed: nothing was sent


class AttemptInput(BaseModel):
    url: str
    webhook_id: str
    body: str


class AttemptOutcome(BaseModel):
    result: AttemptResult
    status_code: int | None = None
    error: str | None = None
    retry_after_seconds: float | None = None
    retry_period_seconds: int = DEFAULT_WEBHOOK_RETRY_SECONDS  # this worker's setting


class WebhookActivities:
    """Sends one attempt. Holds the signing keys (never in a workflow, a log or an error)."""

    def __init__(
        self,
        signer: WebhookSigner,
        *,
        allow_private_networks: bool = False,
        timeout_seconds: float = 10.0,
        retry_period_seconds: int = DEFAULT_WEBHOOK_RETRY_SECONDS,
    ) -> None:
        self._signer = signer
        self._allow_private = allow_private_networks
        self._retry_period = retry_period_seconds
        # No redirects: the address check holds for the URL it checked, not for where a 3xx points.
        # No kept-alive connections: attempts are far apart, and a stale one would cost an attempt.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds), follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, input: AttemptInput) -> AttemptOutcome:
        outcome = await self._attempt(input)
        metrics.WEBHOOKS.labels(outcome=_METRIC_OUTCOME[outcome.result]).inc()
        if outcome.result is not AttemptResult.DELIVERED:
            log.warning("webhook attempt failed", webhook_id=input.webhook_id, result=outcome.result.value,
                        status_code=outcome.status_code, error=outcome.error)
        return outcome

    async def _attempt(self, input: AttemptInput) -> AttemptOutcome:
        def outcome(result: AttemptResult, **fields: object) -> AttemptOutcome:
            return AttemptOutcome.model_validate(
                {"result": result, "retry_period_seconds": self._retry_period, **fields}
            )

        try:
            target = await pinned_request(input.url, allow_private=self._allow_private)
        except CallbackUnresolved as unresolved:  # DNS may come back: try again later
            return outcome(AttemptResult.RETRY, error=str(unresolved))
        except CallbackRefused as refused:
            return outcome(AttemptResult.REFUSED, error=str(refused))
        body = input.body.encode()
        headers = {
            "content-type": "application/json",
            **self._signer.headers(input.webhook_id, int(time.time()), body),
            **target.headers,
        }
        try:
            response = await self._http.post(target.url, content=body, headers=headers, extensions=target.extensions)
        except httpx.TimeoutException as exc:
            return outcome(AttemptResult.RETRY, error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return outcome(AttemptResult.RETRY, error=f"connection error ({type(exc).__name__})")
        code = response.status_code
        if 200 <= code < 300:
            return outcome(AttemptResult.DELIVERED, status_code=code)
        if code >= 500 or code in RETRYABLE_STATUS:
            return outcome(AttemptResult.RETRY, status_code=code, error=f"HTTP {code}",
                           retry_after_seconds=retry_after_seconds(response.headers.get("retry-after")))
        return outcome(AttemptResult.REJECTED, status_code=code, error=f"HTTP {code}: not retried")

    async def aclose(self) -> None:
        await self._http.aclose()


_METRIC_OUTCOME = {
    AttemptResult.DELIVERED: "ok",
    AttemptResult.RETRY: "error",
    AttemptResult.REJECTED: "rejected",
    AttemptResult.REFUSED: "refused",
}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) in seconds; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
