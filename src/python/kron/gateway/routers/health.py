"""Liveness, readiness (Temporal answers, the toolkit preflight is loaded) and Prometheus metrics.
No authentication."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Response

from kron.common.logging import get_logger
from kron.gateway.deps import State
from kron.gateway.errors import error_json, error_responses
from kron.gateway.schemas import HealthStatus

log = get_logger(__name__)
router = APIRouter(tags=["health"])
_READINESS_TIMEOUT = timedelta(seconds=2)


@router.get("/livez", operation_id="livez", response_model=HealthStatus)
async def livez() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get("/readyz", operation_id="readyz", response_model=HealthStatus, responses=error_responses(503))
async def readyz(state: State) -> HealthStatus | Response:
    if state.preflight.warming_up:
        return error_json(503, "warming_up", "Loading the Composio SDK for the toolkit preflight",
                          headers={"Retry-After": "1"})
    if state.client is not None:
        try:
            async with asyncio.timeout(_READINESS_TIMEOUT.total_seconds() + 1):
                if await state.client.service_client.check_health(timeout=_READINESS_TIMEOUT):
                    return HealthStatus(status="ready")
        except Exception as error:  # noqa: BLE001 - whatever fails, we are not ready
            log.info("not ready", exc_type=type(error).__name__)
    return error_json(503, "not_ready", "Temporal is not reachable", headers={"Retry-After": "1"})


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)
