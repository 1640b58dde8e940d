"""Scheduler settings from the environment (`KRON_*`; Composio under the SDK's own names too).

The settings shared with the gateway (task queue, limits) are `kron.common.schedules.ScheduleSettings`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kron.contracts.names import AGENT_TASK_QUEUE


class SourceKind(StrEnum):
    NONE = "none"  # schedules come from the API only
    YAML = "yaml"
    KUBERNETES = "kubernetes"


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KRON_", extra="ignore", env_ignore_empty=True, populate_by_name=True)

    dev_mode: bool = False
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # Where fires start AgentWorkflow (the gateway's KRON_TASK_QUEUE).
    agent_task_queue: str = Field(
        default=AGENT_TASK_QUEUE, validation_alias=AliasChoices("KRON_AGENT_TASK_QUEUE", "KRON_TASK_QUEUE")
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9465, ge=0, le=65535)  # 0: pick a free port
    log_level: str = "INFO"
    drain_seconds: float = Field(default=10.0, ge=0)
    # /livez fails (Kubernetes restarts the pod) when the event loop has not turned for this long.
    liveness_stall_seconds: float = Field(default=60.0, gt=0)

    # Declarative schedules.
    scheduler_source: SourceKind = SourceKind.NONE
    # Stored on each schedule the source makes: the sync deletes only schedules carrying its own id,
    # so two scheduler deployments with different sources never delete each other's.
    scheduler_source_id: str | None = None  # default: the source kind
    scheduler_yaml_path: str | None = None
    scheduler_status_path: str | None = None  # YAML source: where statuses are written (JSON)
    scheduler_k8s_namespace: str | None = None  # None: every namespace (cluster-wide watch)
    scheduler_resync_seconds: float = Field(default=30.0, gt=0)

    # Toolkit preflight at fire time (Composio). Without a key (dev mode only) fires skip the check.
    composio_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KRON_COMPOSIO_API_KEY", "COMPOSIO_API_KEY")
    )
    composio_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("KRON_COMPOSIO_BASE_URL", "COMPOSIO_BASE_URL")
    )
    connect_callback_url: str | None = None

    @property
    def source_id(self) -> str:
        return self.scheduler_source_id or self.scheduler_source.value
