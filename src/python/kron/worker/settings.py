"""Worker settings from the environment (`KRON_*`, plus `ANTHROPIC_*`/`COMPOSIO_*` via AgentSettings)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kron.agent_core.pricing import ModelPrice
from kron.contracts.models import BudgetUsd, CacheTTL, ToolSafety
from kron.contracts.names import AGENT_TASK_QUEUE
from kron.worker.step_options import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KRON_", extra="ignore", env_ignore_empty=True)

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = AGENT_TASK_QUEUE
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: pick a free port
    log_level: str = "INFO"
    # On SIGTERM: stop polling, give in-flight steps this long to finish, then hand them back.
    drain_seconds: float = Field(default=20.0, ge=0)
    # /livez fails (Kubernetes restarts the pod) when the event loop has not turned for this long.
    liveness_stall_seconds: float = Field(default=60.0, gt=0)
    max_concurrent_activities: int = Field(default=200, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)
    max_cached_workflows: int = Field(default=2000, ge=0)
    # Recovery levers (the trade-offs and measurements: deploy/RECOVERY.md).
    # A dead worker's sticky queue delays the next workflow task by this much (SDK default 10 s);
    # on a busy worker, a task that waits longer is replayed from scratch by another worker.
    sticky_queue_timeout_seconds: float = Field(default=1.0, gt=0)
    # A step whose worker died is retried elsewhere this long after its last heartbeat; a live step
    # whose event loop stalls this long is timed out (and run again). Server load: one heartbeat per
    # in-flight step every 0.8 x this.
    heartbeat_timeout_seconds: float = Field(default=HEARTBEAT_TIMEOUT.total_seconds(), gt=0)
    # How often a running step heartbeats; at most half the timeout.
    heartbeat_interval_seconds: float = Field(default=HEARTBEAT_INTERVAL.total_seconds(), gt=0)
    # Concurrent long polls for workflow and activity tasks (the SDK's defaults).
    workflow_task_pollers: int = Field(default=5, ge=2)
    activity_task_pollers: int = Field(default=5, ge=1)
    # Signs webhooks (Standard Webhooks: `webhook-signature`): one or more `whsec_<base64 key>`
    # secrets separated by spaces; each signs every delivery (rotation). Without it, unsigned.
    webhook_secret: SecretStr | None = None
    # A webhook that fails (connection, timeout, 408, 429, 5xx) is retried for this long; and how
    # long one attempt may take.
    webhook_retry_seconds: int = Field(default=24 * 3600, ge=1, le=7 * 24 * 3600)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Webhooks to loopback/private/link-local addresses (kron.common.callback_urls). Off in production:
    # a user's callback_url must not reach what only the cluster can.
    webhook_allow_private_networks: bool = False
    # Tool safety overrides by tool slug or toolkit, JSON: {"github": "read_only", "X_Y": "unsafe"}.
    tool_safety: dict[str, ToolSafety] = Field(default_factory=dict)
    # Lifetime of prompt-cache entries for runs that do not set `cache_ttl` ("5m" or "1h"). With
    # "5m" a run switches to 1h by itself once it has waited longer than 5 minutes (see workflows).
    prompt_cache_ttl: CacheTTL = "5m"
    # Prices in USD per million tokens by model id, JSON: {"my-model": {"input": 1, "output": 5}}.
    # They replace or extend the shipped list prices (kron/agent_core/prices.json); a model with no
    # price has an unknown cost (shown as such, never as 0).
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # Every user's USD budget per calendar month (UTC); unset: none. Reached, runs pause before their
    # next model call and go on when it is raised (or the month ends).
    user_monthly_budget_usd: BudgetUsd | None = None
    # Per-user monthly budgets overriding the default, JSON: {"alice": 50}.
    user_monthly_budgets_usd: dict[str, BudgetUsd] = Field(default_factory=dict)
    # Use the offline demo model and tools instead of Anthropic and Composio (local stack, demos).
    demo_mode: bool = False
    # Context window per model name, JSON: {"claude-x": 1000000}. Others: 200,000 tokens. The
    # context guard keeps each request (estimated as characters/4) plus max_tokens within it.
    context_windows: dict[str, int] = Field(default_factory=dict)
    # How often this worker deletes the transcripts of runs over their retention
    # (KRON_TRANSCRIPT_RETENTION_DAYS). 0: never (e.g. an S3 lifecycle rule does it).
    transcript_sweep_interval_seconds: float = Field(default=3600.0, ge=0)


    @model_validator(mode="after")
    def _heartbeats_within_timeout(self) -> Self:
        if self.heartbeat_interval_seconds * 2 > self.heartbeat_timeout_seconds:
            raise ValueError(
                "KRON_HEARTBEAT_INTERVAL_SECONDS must be at most half of KRON_HEARTBEAT_TIMEOUT_SECONDS "
                f"({self.heartbeat_interval_seconds} > {self.heartbeat_timeout_seconds} / 2)"
            )
        return self
