"""`create_app`: the gateway's FastAPI application.

The lifespan connects the Temporal client (with the pydantic data converter the worker uses; while
Temporal is unreachable the gateway serves anyway, not ready, and keeps trying) and starts loading the
Composio adapter in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from kron.common.logging import get_logger
from kron.common.mcp_connect import McpConnector
from kron.common.schedules import ScheduleSettings
from kron.common.toolkit_preflight import ConnectionsFactory
from kron.common.transcripts import TranscriptSettings, open_store
from kron.gateway.cursors import CursorCodec
from kron.gateway.errors import install_error_handlers
from kron.gateway.metrics import GatewayMetrics
from kron.gateway.middleware import RequestContextMiddleware
from kron.gateway.preflight import Preflight, composio_connections_factory
from kron.gateway.ratelimit import TokenBucketLimiter
from kron.gateway.routers import agents, auth, deliveries, health, schedules, tasks, usage
from kron.gateway.settings import GatewaySettings, get_settings
from kron.gateway.state import GatewayState
from kron.gateway.tokens import make_verifier

log = get_logger(__name__)


class _FromSettings:
    """Default of `connections_factory`: None already means "no preflight"."""


FROM_SETTINGS = _FromSettings()


def create_app(
    settings: GatewaySettings | None = None,
    *,
    temporal_client: Client | None = None,
    connections_factory: ConnectionsFactory | None | _FromSettings = FROM_SETTINGS,
    schedule_settings: ScheduleSettings | None = None,
) -> FastAPI:
    """`temporal_client`: use this client instead of connecting one (tests share theirs).
    `connections_factory`: what the toolkit preflight talks to; by default Composio from the
    settings (None when no key is set, i.e. no preflight). `schedule_settings`: by default from
    the environment, like the scheduler's."""
    settings = settings or get_settings()
    metrics = GatewayMetrics()
    factory = (
        composio_connections_factory(settings)
        if isinstance(connections_factory, _FromSettings)
        else connections_factory
    )
    state = GatewayState(
        settings=settings,
        schedule_settings=schedule_settings or ScheduleSettings(),
        metrics=metrics,
        dispatch_limiter=TokenBucketLimiter(settings.dispatch_rate_per_second, settings.dispatch_burst),
        preflight=Preflight(
            factory,
            metrics,
            timeout_seconds=settings.preflight_timeout_seconds,
            connect_callback_url=settings.connect_callback_url,
        ),
        cursors=CursorCodec(settings.jwt_secret.get_secret_value().encode()),
        transcripts=open_store(TranscriptSettings()),
        verifier=make_verifier(settings),
        mcp=McpConnector(secrets_dir=settings.mcp_secrets_dir, timeout_seconds=settings.mcp_preflight_timeout_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if temporal_client is not None:
            state.attach(temporal_client)
        else:
            connecting = asyncio.create_task(_connect_temporal(state))
            # Usually connected at once; if not, serve anyway (not ready, 503s) while it retries.
            await asyncio.wait({connecting}, timeout=settings.temporal_startup_wait_seconds)
        state.preflight.warm_up()
        log.info("gateway started", temporal=settings.temporal_address, task_queue=settings.task_queue,
                 dev_mode=settings.dev_mode, preflight=state.preflight.enabled,
                 identity_stand_in=settings.token_endpoint_active, oidc_issuer=settings.oidc_issuer)  # not "token*": logging redacts those keys
        try:
            yield
        finally:
            if temporal_client is None and not connecting.done():
                connecting.cancel()
            await state.aclose()

    app = FastAPI(
        title="kron gateway",
        summary="Durable background AI agents: dispatch, follow and cancel runs.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks: kron exports Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url="/docs" if settings.dev_mode else None,
        redoc_url=None,
    )
    app.state.gateway = state
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
    )
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(tasks.router)
    app.include_router(deliveries.router)
    app.include_router(schedules.router)
    app.include_router(usage.router)
    app.include_router(agents.router)
    return app


async def _connect_temporal(state: GatewayState) -> None:
    """Connect, retrying with backoff until it works. Once connected the client reconnects by
    itself after server restarts (calls in between fail with RPC errors: 503s)."""
    settings = state.settings
    delay = 0.5
    while True:
        try:
            client = await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            )
        except Exception as error:  # noqa: BLE001 - the SDK raises RuntimeError for connect failures
            log.warning("temporal not reachable, retrying", temporal=settings.temporal_address,
                        exc_type=type(error).__name__, retry_in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        else:
            state.attach(client)
            log.info("temporal connected", temporal=settings.temporal_address)
            return
