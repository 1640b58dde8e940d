"""`kron-worker`: polls the agent task queue and runs `AgentWorkflow` and its activities.

SIGTERM/SIGINT drain the worker: it stops polling, lets in-flight steps finish for up to
`KRON_DRAIN_SECONDS`, then hands back what is left (Temporal retries those steps elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from kron.agent_core.demo import DEMO_MODEL, DemoLLM, DemoTools
from kron.agent_core.ports import LLM, ToolProvider
from kron.agent_core.pricing import ModelPrice, PriceTable
from kron.agent_core.settings import AgentSettings
from kron.agent_core.tool_safety import ToolSafetyPolicy
from kron.common.logging import configure_logging, get_logger
from kron.common.ops import Health, serve_ops
from kron.common.transcripts import TranscriptSettings, TranscriptStore, open_store
from kron.worker.activities import AgentActivities
from kron.worker.interceptors import LogContextInterceptor
from kron.worker.settings import WorkerSettings
from kron.worker.spend_ledger import SpendLedgerWorkflow
from kron.worker.webhook_delivery import WebhookDeliveryWorkflow
from kron.worker.webhook_signing import BadWebhookSecret, WebhookSigner
from kron.worker.workflows import AgentWorkflow

log = get_logger(__name__)


def build_ports(settings: WorkerSettings, agent: AgentSettings) -> tuple[LLM, ToolProvider]:
    """Anthropic and Composio, or the offline demo stand-ins when demo mode is on."""
    if settings.demo_mode:
        return DemoLLM(), DemoTools()
    if agent.anthropic_api_key is None:
        raise SystemExit("ANTHROPIC_API_KEY is not set (or set KRON_DEMO_MODE=true for the demo model)")
    if agent.composio_api_key is None:
        raise SystemExit("COMPOSIO_API_KEY is not set (or set KRON_DEMO_MODE=true for demo tools)")
    from kron.agent_core.anthropic_llm import AnthropicLLM
    from kron.agent_core.composio_tools import ComposioToolProvider

    llm = AnthropicLLM(
        api_key=agent.anthropic_api_key.get_secret_value(),
        base_url=agent.anthropic_base_url,
        max_retries=0,  # Temporal owns retries: each attempt is visible and durable
        timeout=agent.kron_model_timeout_seconds,
    )
    tools = ComposioToolProvider(
        api_key=agent.composio_api_key.get_secret_value(), base_url=agent.composio_base_url
    )
    return llm, tools


def price_table(settings: WorkerSettings) -> PriceTable:
    """The shipped list prices with the settings' overrides; the offline demo model costs nothing."""
    free = {DEMO_MODEL: ModelPrice(input=0, output=0)} if settings.demo_mode else {}
    return PriceTable.with_overrides({**free, **settings.model_prices})


def build_worker(
    client: Client, settings: WorkerSettings, activities: AgentActivities
) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentWorkflow, SpendLedgerWorkflow, WebhookDeliveryWorkflow],
        activities=activities.all(),
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.sticky_queue_timeout_seconds
        ),
        graceful_shutdown_timeout=timedelta(seconds=settings.drain_seconds),
        interceptors=[LogContextInterceptor()],
    )


async def sweep_transcripts(store: TranscriptStore, retention_days: float, interval_seconds: float) -> None:
    """Delete the transcripts of runs over their retention, now and every interval. Every worker
    sweeps: the deletes are idempotent, and no coordination is worth a second process."""
    while True:
        try:
            await store.sweep(retention_days * 86400)
        except Exception as exc:  # noqa: BLE001 - a failed sweep is tried again next interval
            log.warning("transcript sweep failed", error=type(exc).__name__)
        await asyncio.sleep(interval_seconds)


async def run_worker(settings: WorkerSettings, agent: AgentSettings) -> None:
    # Signals first: a SIGTERM during start-up (e.g. a scale-in) must stop us, not be ignored.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    llm, tools = build_ports(settings, agent)
    transcript_settings = TranscriptSettings()
    transcripts = open_store(transcript_settings)
    try:  # a bad secret stops the worker here; the message names its position, never its value
        WebhookSigner.from_secrets(settings.webhook_secret.get_secret_value() if settings.webhook_secret else "")
    except BadWebhookSecret as bad:
        raise SystemExit(f"KRON_WEBHOOK_SECRET: {bad}") from None
    activities = AgentActivities(
        llm,
        tools,
        default_model=agent.kron_model,
        default_max_tokens=agent.kron_max_tokens,
        default_cache_ttl=settings.prompt_cache_ttl,
        safety_policy=ToolSafetyPolicy(settings.tool_safety),
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        webhook_allow_private_networks=settings.webhook_allow_private_networks,
        webhook_timeout_seconds=settings.webhook_timeout_seconds,
        webhook_retry_seconds=settings.webhook_retry_seconds,
        prices=price_table(settings),
        user_monthly_budget_usd=settings.user_monthly_budget_usd,
        user_monthly_budgets_usd=settings.user_monthly_budgets_usd,
        transcripts=transcripts,
        context_windows=settings.context_windows,
    )
    # /livez, /readyz and /metrics from the start: probes see "starting" while Temporal connects.
    health = Health(stall_seconds=settings.liveness_stall_seconds)
    with serve_ops(settings.metrics_port, settings.metrics_host, health) as ops:
        # No temporalio ExternalStorage on top: conversation content, the only payloads that grow,
        # is already out of history (kron.common.transcripts), and what is left is bounded by the
        # contracts (goal and system prompt <= 32 kB, replies by max_tokens). Turning it on would
        # also make every client that reads payloads (the gateway's results and queries, the
        # scheduler, `temporal workflow show`) need the same driver and bucket credentials to see
        # anything but a reference.
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
        worker = build_worker(client, settings, activities)
        log.info("worker started", task_queue=settings.task_queue, temporal=settings.temporal_address,
                 metrics_port=ops.port, demo_mode=settings.demo_mode, pid=os.getpid(),
                 transcript_store=transcript_settings.store)
        sweeper = (
            asyncio.create_task(sweep_transcripts(
                transcripts, transcript_settings.retention_days, settings.transcript_sweep_interval_seconds
            ))
            if settings.transcript_sweep_interval_seconds > 0
            else None
        )
        async with health.watching(client), worker:
            health.started()
            # Tests and supervisors wait for this line on stdout before they count the worker as ready.
            print(f"kron-worker ready metrics_port={ops.port}", flush=True)
            await stop.wait()
            health.draining()
            log.info("draining", grace_seconds=settings.drain_seconds)
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await activities.aclose()
        await transcripts.aclose()
    log.info("worker stopped")


def main() -> None:
    settings = WorkerSettings()
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings, AgentSettings()))
    # Exit without interpreter teardown: the SDK can abort there after in-process workers
    # (sdk-python#300). Everything is flushed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
