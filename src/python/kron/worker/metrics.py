"""The worker's Prometheus metrics. Labels are bounded enums; never user ids or tool arguments."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kron.common.metrics import LATENCY_BUCKETS_SECONDS

RUNS = Counter("kron_runs_total", "Agent runs finished, by final status.", ["status"])
MODEL_CALLS = Counter(
    "kron_model_calls_total", "Model call attempts, by outcome (ok or an error code).", ["outcome"]
)
MODEL_TOKENS = Counter(
    "kron_model_tokens_total", "Tokens used by model calls, by direction.", ["direction"]
)
TOOL_CALLS = Counter(
    "kron_tool_calls_total", "Tool call attempts, by outcome (ok, error, transport_error).", ["outcome"]
)
STEP_DURATION = Histogram(
    "kron_step_duration_seconds",
    "Duration of one agent step inside its activity, by kind (model or tool).",
    ["kind"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
WEBHOOKS = Counter("kron_webhooks_total", "Completion webhooks sent, by outcome.", ["outcome"])
