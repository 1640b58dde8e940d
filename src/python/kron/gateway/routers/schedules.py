"""Schedules: agents that run on their own (cron or interval), on Temporal Schedules.

Each route acts for the verified `sub` only; another user's schedule is a 404. Schedules made by a
declarative source (a ScheduledRun resource) are listed, read and triggered here, but changed only
at their source (409 here). The Temporal calls are `kron.common.schedules.ScheduleStore` (shared
with the scheduler deployable); settings both sides must agree on are `ScheduleSettings` (`KRON_*`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import ValidationError

from kron.common.callback_urls import normalized_url
from kron.common.logging import get_logger
from kron.common.schedules import (
    ScheduleExists,
    ScheduleNotFound,
    ScheduleRejected,
    SchedulerUnavailable,
    ScheduleSettings,
    ScheduleStore,
    ScheduleView,
)
from kron.contracts.schedules import (
    NAME_PATTERN,
    SOURCE_API,
    ConcurrencyPolicy,
    ScheduleDefinition,
    limit_errors,
)
from kron.gateway.deps import CurrentUser, Schedules, State
from kron.gateway.errors import (
    ApiError,
    ToolkitNotConnectedBody,
    error_responses,
    not_found,
    validation_error,
)
from kron.gateway.preflight import require_mcp_available
from kron.gateway.run_limits import mcp_server_errors, run_limit_errors
from kron.gateway.schemas import RunHistoryPage, ScheduleDetail, SchedulePage, TriggerAccepted
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)
router = APIRouter(prefix="/schedules", tags=["schedules"])

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="The schedule's name.")]
_NOT_CONNECTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ToolkitNotConnectedBody, "description": "A toolkit is not connected, or a name conflict"},
}
PATCH_EXAMPLE = {"timing": {"cron": ["0 9 * * 1-5"]}, "run": {"toolkits": ["github", "slack"]}}


# --- routes


@router.post(
    "",
    status_code=201,
    operation_id="create_schedule",
    response_model=ScheduleDetail,
    responses={**error_responses(400, 401, 413, 422, 503), **_NOT_CONNECTED_RESPONSE},
    summary="Create a schedule",
)
async def create_schedule(
    body: ScheduleDefinition, user: CurrentUser, state: State, store: Schedules, response: Response
) -> ScheduleDetail:
    body = _checked(body, state.settings, store.settings)
    if await store.count_owned(user, store.settings.schedule_max_per_user + 1) >= store.settings.schedule_max_per_user:
        raise ApiError(409, "schedule_limit", f"At most {store.settings.schedule_max_per_user} schedules per user")
    # Every fire checks again: a later disconnect records `preflight_failed`.
    await state.preflight.require_connected(user, body.run.toolkits)
    await require_mcp_available(state.mcp, body.run.mcp_servers,
                                timeout_seconds=state.settings.mcp_preflight_timeout_seconds)
    try:
        view = await store.create(user, body)
    except ScheduleExists:
        raise ApiError(409, "schedule_exists", f"You already have a schedule named {body.name!r}") from None
    except ScheduleRejected as rejected:
        raise _rejected(rejected) from None
    response.headers["Location"] = f"/schedules/{body.name}"
    log.info("schedule created", schedule_id=view.schedule_id, user_id=user,
             policy=body.concurrency_policy.value, suspended=body.suspend)
    return ScheduleDetail.of(view)


@router.get(
    "",
    operation_id="list_schedules",
    response_model=SchedulePage,
    responses=error_responses(401, 422, 503),
    summary="List your schedules",
)
async def list_schedules(
    user: CurrentUser,
    state: State,
    store: Schedules,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048, description="`next_cursor` of the previous page.")] = None,
) -> SchedulePage:
    scope = f"{user}\0schedules"
    page_token: bytes | None = None
    if cursor:
        page_token = state.cursors.decode(cursor, scope)
        if page_token is None:
            raise ApiError(422, "invalid_cursor", "The cursor is not valid for this listing; start over")
    schedules, next_token = await store.list_owned(user, page_size=limit, page_token=page_token)
    return SchedulePage(
        schedules=sorted(schedules, key=lambda s: s.name),
        next_cursor=state.cursors.encode(next_token, scope) if next_token else None,
    )


@router.get(
    "/{name}",
    operation_id="get_schedule",
    response_model=ScheduleDetail,
    responses=error_responses(401, 404, 422, 503),
    summary="A schedule, with its next run times",
)
async def get_schedule(name: NamePath, user: CurrentUser, store: Schedules) -> ScheduleDetail:
    return ScheduleDetail.of(await _owned(store, user, name))


@router.patch(
    "/{name}",
    operation_id="update_schedule",
    response_model=ScheduleDetail,
    responses={**error_responses(400, 401, 404, 413, 422, 503), **_NOT_CONNECTED_RESPONSE},
    summary="Change a schedule (JSON merge patch: `timing` and `run` merge key by key)",
)
async def update_schedule(
    name: NamePath,
    user: CurrentUser,
    state: State,
    store: Schedules,
    patch: Annotated[dict[str, Any], Body(openapi_examples={"cron and toolkits": {"value": PATCH_EXAMPLE}})],
) -> ScheduleDetail:
    view = _writable(await _owned(store, user, name))
    definition = _checked(_patched(view.definition, patch), state.settings, store.settings)
    added = [t for t in definition.run.toolkits if t not in view.definition.run.toolkits]
    await state.preflight.require_connected(user, added)
    new_servers = [s for s in definition.run.mcp_servers if s not in view.definition.run.mcp_servers]
    await require_mcp_available(state.mcp, new_servers, timeout_seconds=state.settings.mcp_preflight_timeout_seconds)
    try:
        updated = await store.replace(view, definition)
    except ScheduleRejected as rejected:
        raise _rejected(rejected) from None
    log.info("schedule updated", schedule_id=view.schedule_id, user_id=user, fields=sorted(patch))
    return ScheduleDetail.of(updated)


@router.delete(
    "/{name}",
    status_code=204,
    operation_id="delete_schedule",
    responses=error_responses(401, 404, 409, 422, 503),
    summary="Delete a schedule and its run history (runs already going finish)",
)
async def delete_schedule(name: NamePath, user: CurrentUser, store: Schedules) -> Response:
    view = _writable(await _owned(store, user, name))
    await store.delete(view.schedule_id)
    log.info("schedule deleted", schedule_id=view.schedule_id, user_id=user)
    return Response(status_code=204)


@router.post(
    "/{name}/suspend",
    operation_id="suspend_schedule",
    response_model=ScheduleDetail,
    responses=error_responses(401, 404, 409, 422, 503),
    summary="Stop firing (trigger-now still works)",
)
async def suspend_schedule(name: NamePath, user: CurrentUser, store: Schedules) -> ScheduleDetail:
    view = _writable(await _owned(store, user, name))
    return ScheduleDetail.of(await store.set_suspended(view, True))


@router.post(
    "/{name}/resume",
    operation_id="resume_schedule",
    response_model=ScheduleDetail,
    responses=error_responses(401, 404, 409, 422, 503),
    summary="Fire again on schedule (missed fires are not made up)",
)
async def resume_schedule(name: NamePath, user: CurrentUser, store: Schedules) -> ScheduleDetail:
    view = _writable(await _owned(store, user, name))
    return ScheduleDetail.of(await store.set_suspended(view, False))


@router.post(
    "/{name}/trigger",
    status_code=202,
    operation_id="trigger_schedule",
    response_model=TriggerAccepted,
    responses=error_responses(401, 404, 422, 429, 503),
    summary="Fire now, even while suspended; the concurrency policy still applies",
)
async def trigger_schedule(name: NamePath, user: CurrentUser, state: State, store: Schedules) -> TriggerAccepted:
    view = await _owned(store, user, name)
    # A trigger starts a run: it spends the same per-user allowance as a dispatch.
    wait_seconds = state.dispatch_limiter.acquire(user)
    if wait_seconds > 0:
        retry_after = max(1, math.ceil(wait_seconds))
        raise ApiError(429, "rate_limited", f"Too many dispatches; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)}, retry_after_seconds=retry_after)
    fire_id = await store.trigger(view)
    policy = view.definition.concurrency_policy
    detail = {
        ConcurrencyPolicy.ALLOW: "Fire started",
        ConcurrencyPolicy.FORBID: "Fire requested; skipped if the previous run is still going",
        ConcurrencyPolicy.REPLACE: "Fire requested; a run still going is cancelled first",
    }[policy]
    log.info("schedule triggered", schedule_id=view.schedule_id, user_id=user, policy=policy.value)
    return TriggerAccepted(name=name, fire_id=fire_id, detail=detail)


@router.get(
    "/{name}/runs",
    operation_id="list_schedule_runs",
    response_model=RunHistoryPage,
    responses=error_responses(401, 404, 422, 503),
    summary="Run history: each fire's dispatch status and, for runs, how they ended",
)
async def list_schedule_runs(name: NamePath, user: CurrentUser, store: Schedules) -> RunHistoryPage:
    view = await _owned(store, user, name)
    try:
        history = await store.history(view.schedule_id)
    except SchedulerUnavailable:
        raise ApiError(503, "scheduler_unavailable", "Run history is unavailable; try again shortly",
                       headers={"Retry-After": "2"}) from None
    return RunHistoryPage(
        name=name,
        runs=history.records,
        max_run_history=history.max_run_history or view.definition.max_run_history,
        skipped_total=history.skips_total,
    )


# --- helpers


async def _owned(store: ScheduleStore, user: str, name: str) -> ScheduleView:
    try:
        return await store.get_owned(user, name)
    except ScheduleNotFound:
        raise not_found("schedule") from None


def _writable(view: ScheduleView) -> ScheduleView:
    if view.source != SOURCE_API:
        raise ApiError(
            409, "schedule_managed_declaratively",
            f"This schedule is managed by {view.source} (a ScheduledRun resource); change it there",
            source=view.source,
        )
    return view


def _patched(current: ScheduleDefinition, patch: dict[str, Any]) -> ScheduleDefinition:
    """RFC 7386 merge patch, one level deep into `timing` and `run`; `null` resets a field."""
    if "name" in patch and patch["name"] != current.name:
        raise validation_error([{"loc": ["body", "name"], "msg": "A schedule cannot be renamed", "type": "immutable"}])
    merged = current.model_dump(mode="json", exclude_none=True)
    for key, value in patch.items():
        if key in ("timing", "run") and isinstance(value, dict):
            section = {**merged.get(key, {}), **value}
            merged[key] = {k: v for k, v in section.items() if v is not None}
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    # Cron and interval exclude each other: setting one drops the other.
    raw_timing = patch.get("timing")
    timing_patch: dict[str, Any] = raw_timing if isinstance(raw_timing, dict) else {}
    if timing_patch.get("cron"):
        merged["timing"].pop("interval_seconds", None)
    elif timing_patch.get("interval_seconds") is not None:
        merged["timing"].pop("cron", None)
    try:
        return ScheduleDefinition.model_validate(merged)
    except ValidationError as error:
        raise validation_error([
            {"loc": ["body", *(str(p) for p in e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in error.errors()[:20]
        ]) from None


def _checked(
    definition: ScheduleDefinition, settings: GatewaySettings, schedule_settings: ScheduleSettings
) -> ScheduleDefinition:
    """The definition to store, after the checks that depend on settings (422 like schema errors):
    the dispatch limits and the schedule limits (minimum interval, history size)."""
    errors = limit_errors(definition, schedule_settings.limits, datetime.now(UTC), loc=("body",))
    run = definition.run
    errors += run_limit_errors(
        settings, goal=run.goal, toolkits=run.toolkits, model=run.model, max_iterations=run.max_iterations,
        token_budget=run.token_budget, callback_url=run.callback_url, loc=("body", "run"),
    )
    errors += mcp_server_errors(settings, run.mcp_servers, loc=("body", "run"))
    if errors:
        raise validation_error(errors)
    if run.callback_url is None:
        return definition
    # Stored as it will be reached (`http://0x5db8d822/` as `http://93.184.216.34/`).
    return definition.model_copy(
        update={"run": run.model_copy(update={"callback_url": normalized_url(run.callback_url)})}
    )


def _rejected(rejected: ScheduleRejected) -> ApiError:
    return validation_error([{"loc": ["body", "timing"], "msg": f"Temporal refused the schedule: {rejected}",
                              "type": "schedule_rejected"}])
