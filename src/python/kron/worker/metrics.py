"""The worker's Prometheus metrics. Labels are bounded enums; never user ids or tool arguments."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kron.agent_core.types import ModelResponse
from kron.common.metrics import LATENCY_BUCKETS_SECONDS
from kron.contracts.models import BudgetKind, RunStatus

RUNS = Counter("kron_runs_total", "Agent runs finished, by final status.", ["status"])
MODEL_CALLS = Counter(
    "kron_model_calls_total", "Model call attempts, by outcome (ok or an error code).", ["outcome"]
)
MODEL_TOKENS = Counter(
    "kron_model_tokens_total",
    "Tokens of model calls, by direction: input (uncached), output, cache_read (input read from the "
    "prompt cache), cache_write (input written to it).",
    ["direction"],
)
TOKEN_DIRECTIONS = ("input", "output", "cache_read", "cache_write")
TOOL_CALLS = Counter(
    "kron_tool_calls_total", "Tool call attempts, by outcome (ok, error, transport_error).", ["outcome"]
)
STEP_DURATION = Histogram(
    "kron_step_duration_seconds",
    "Duration of one agent step inside its activity, by kind (model or tool).",
    ["kind"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
MODEL_COST = Counter(
    "kron_model_cost_usd",  # exported as kron_model_cost_usd_total
    "USD spent on model calls by the worker's price table, by model (a price table id; 'unknown' "
    "counts nothing: those calls have no price, see kron_model_calls_unpriced_total).",
    ["model"],
)
MODEL_CALLS_UNPRICED = Counter(
    "kron_model_calls_unpriced_total", "Model calls whose model has no price: their cost is unknown."
)
RUN_PAUSES = Counter(
    "kron_run_budget_pauses_total", "Runs paused because a USD budget was reached, by budget.", ["budget"]
)
WEBHOOKS = Counter(
    "kron_webhooks_total",
    "Webhook delivery attempts, by outcome: ok (2xx), error (retried: connection, timeout, 408, 429, "
    "5xx), rejected (another non-2xx: not retried), refused (a callback_url on a non-public network).",
    ["outcome"],
)



def count_tokens(response: ModelResponse) -> None:
    for direction, tokens in (
        ("input", response.input_tokens),
        ("output", response.output_tokens),
        ("cache_read", response.cache_read_input_tokens),
        ("cache_write", response.cache_creation_input_tokens),
    ):
        MODEL_TOKENS.labels(direction=direction).inc(tokens)


# Series exist (at 0) from the start, so dashboards and alerts see "none yet" rather than "no data".
for _status in RunStatus:
    if _status.is_terminal:
        RUNS.labels(status=_status.value)
MODEL_CALLS.labels(outcome="ok")
for _direction in TOKEN_DIRECTIONS:
    MODEL_TOKENS.labels(direction=_direction)
for _outcome in ("ok", "error", "transport_error"):
    TOOL_CALLS.labels(outcome=_outcome)
for _kind in ("model", "tool"):
    STEP_DURATION.labels(kind=_kind)
for _outcome in ("ok", "error", "rejected", "refused"):
    WEBHOOKS.labels(outcome=_outcome)
for _budget in BudgetKind:
    RUN_PAUSES.labels(budget=_budget.value)
UNKNOWN_MODEL = "unknown"


def init_model_cost(model_ids: list[str]) -> None:
    """Series for every priced model (and `unknown`) at 0: the label stays bounded by the table."""
    for model in [*model_ids, UNKNOWN_MODEL]:
        MODEL_COST.labels(model=model)
