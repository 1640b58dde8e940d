"""The gateway's Prometheus metrics, in a registry per app (tests build many apps in one process).

Labels are bounded: the route TEMPLATE (never the raw path), a known method, a status class and
fixed outcome names. No user ids, task ids or model names.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from kron.common.metrics import LATENCY_BUCKETS_SECONDS

KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class DispatchOutcome(StrEnum):
    STARTED = "started"
    REPLAYED = "replayed"  # an Idempotency-Key seen before: the existing task was returned
    NOT_CONNECTED = "not_connected"
    RATE_LIMITED = "rate_limited"
    INVALID = "invalid"
    PREFLIGHT_ERROR = "preflight_error"
    TEMPORAL_ERROR = "temporal_error"


class PreflightOutcome(StrEnum):
    CONNECTED = "connected"
    NOT_CONNECTED = "not_connected"
    ERROR = "error"
    SKIPPED = "skipped"  # no Composio key (dev mode)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "kron_gateway_requests",
            "HTTP requests handled, by route template, method and status class (2xx, 4xx, ...).",
            ["route", "method", "status_class"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "kron_gateway_request_duration_seconds",
            "Time to handle an HTTP request (for event streams: how long the stream was open).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.dispatches = Counter(
            "kron_dispatches", "Dispatch requests by outcome.", ["outcome"], registry=self.registry
        )
        self.preflight = Counter(
            "kron_preflight",
            "Toolkit connection checks (one per toolkit named in a dispatch), by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # Every outcome exported from the start, so rates and alerts see zeros instead of gaps.
        for dispatch_outcome in DispatchOutcome:
            self.dispatches.labels(dispatch_outcome.value)
        for preflight_outcome in PreflightOutcome:
            self.preflight.labels(preflight_outcome.value)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(route, method, f"{status // 100}xx").inc()
        self.request_duration.labels(route, method).observe(seconds)

    def dispatched(self, outcome: DispatchOutcome) -> None:
        self.dispatches.labels(outcome.value).inc()

    def preflight_checked(self, outcome: PreflightOutcome, count: int = 1) -> None:
        self.preflight.labels(outcome.value).inc(count)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
