"""`kron-scheduler`: the Temporal worker for scheduled fires and run histories, plus the declarative
sync (a ScheduledRun source kept in step with Temporal Schedules), plus /metrics.

SIGTERM/SIGINT stop the sync, then drain the worker (in-flight activities get `KRON_DRAIN_SECONDS`).
Nothing is lost across a restart: fires, run histories and schedules all live in Temporal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta

from prometheus_client import REGISTRY, CollectorRegistry
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from kron.common.agents import AgentStore
from kron.common.logging import configure_logging, get_logger
from kron.common.ops import Health, serve_ops
from kron.common.schedules import ScheduleSettings, ScheduleStore
from kron.scheduler.activities import SchedulerActivities
from kron.scheduler.agent_registry import AgentRegistryWorkflow
from kron.scheduler.declared_agents import AgentSource, AgentSync, KubernetesAgentSource, YamlAgentSource
from kron.scheduler.metrics import SchedulerMetrics
from kron.scheduler.preflight import LazyConnections, composio_connections_factory
from kron.scheduler.settings import SchedulerSettings, SourceKind
from kron.scheduler.sources import DefinitionSource, YamlFileSource
from kron.scheduler.sync import ScheduleSync
from kron.scheduler.workflows import ScheduledFireWorkflow, ScheduleLedgerWorkflow

log = get_logger(__name__)


def build_worker(
    client: Client, task_queue: str, activities: SchedulerActivities, *, drain_seconds: float = 10.0
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ScheduledFireWorkflow, ScheduleLedgerWorkflow, AgentRegistryWorkflow],
        activities=activities.all(),
        # A dead scheduler's sticky queue would hold the next workflow task for 10 s (SDK default).
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
        graceful_shutdown_timeout=timedelta(seconds=drain_seconds),
    )


def build_agent_source(settings: SchedulerSettings, source: DefinitionSource) -> AgentSource | None:
    """Declared Agents come from where the ScheduledRuns do (the same file, the same cluster)."""
    if isinstance(source, YamlFileSource):
        return YamlAgentSource(source.path, source_id=source.source_id)
    if settings.scheduler_source is SourceKind.KUBERNETES:
        from kron.scheduler.kubernetes_source import KubernetesSource

        assert isinstance(source, KubernetesSource)
        return KubernetesAgentSource(source.api, namespace=settings.scheduler_k8s_namespace, source_id=source.source_id)
    return None


def build_source(settings: SchedulerSettings) -> DefinitionSource | None:
    if settings.scheduler_source is SourceKind.YAML:
        if not settings.scheduler_yaml_path:
            raise SystemExit("KRON_SCHEDULER_SOURCE=yaml needs KRON_SCHEDULER_YAML_PATH")
        return YamlFileSource(
            settings.scheduler_yaml_path, source_id=settings.source_id, status_path=settings.scheduler_status_path
        )
    if settings.scheduler_source is SourceKind.KUBERNETES:
        from kron.scheduler.kubernetes_source import KubernetesSource  # only deployments on k8s need it

        return KubernetesSource.from_environment(
            namespace=settings.scheduler_k8s_namespace, source_id=settings.source_id
        )
    return None


async def run_scheduler(
    settings: SchedulerSettings,
    schedule_settings: ScheduleSettings,
    *,
    stop: asyncio.Event | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> None:
    if settings.composio_api_key is None and not settings.dev_mode:
        raise SystemExit(
            "COMPOSIO_API_KEY is not set: fires check toolkit connections before they start a run "
            "(KRON_DEV_MODE=true skips the check)"
        )
    stop = stop or asyncio.Event()
    metrics = SchedulerMetrics(registry)
    # /livez, /readyz and /metrics from the start: probes see "starting" while Temporal connects.
    health = Health(stall_seconds=settings.liveness_stall_seconds)
    with serve_ops(settings.metrics_port, settings.metrics_host, health, registry) as ops:
        client = await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace, data_converter=pydantic_data_converter
        )
        activities = SchedulerActivities(
            client,
            metrics,
            LazyConnections(composio_connections_factory(settings)),
            connect_callback_url=settings.connect_callback_url,
            observe_interval_seconds=schedule_settings.schedule_observe_interval_seconds,
        )
        worker = build_worker(client, schedule_settings.scheduler_task_queue, activities,
                              drain_seconds=settings.drain_seconds)
        source = build_source(settings)
        store = ScheduleStore(client, schedule_settings, agent_task_queue=settings.agent_task_queue)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        log.info("scheduler started", task_queue=schedule_settings.scheduler_task_queue,
                 agent_task_queue=settings.agent_task_queue, source=settings.scheduler_source.value,
                 temporal=settings.temporal_address, metrics_port=ops.port, pid=os.getpid())
        async with health.watching(client), worker:
            health.started()
            # Tests and supervisors wait for this line before they count the scheduler as ready.
            print(f"kron-scheduler ready metrics_port={ops.port}", flush=True)
            if source is not None:
                agent_source = build_agent_source(settings, source)
                agents = AgentSync(
                    AgentStore(client, scheduler_task_queue=schedule_settings.scheduler_task_queue), agent_source
                ) if agent_source is not None else None
                sync = ScheduleSync(store, source, schedule_settings.limits, metrics, agents=agents)
                await sync.run(stop, settings.scheduler_resync_seconds)
            else:
                await stop.wait()
            health.draining()
            log.info("draining", grace_seconds=settings.drain_seconds)
    log.info("scheduler stopped")


def main() -> None:
    settings = SchedulerSettings()
    configure_logging(settings.log_level)
    asyncio.run(run_scheduler(settings, ScheduleSettings()))
    # Exit without interpreter teardown: the SDK can abort there after in-process workers
    # (sdk-python#300). Everything is flushed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
