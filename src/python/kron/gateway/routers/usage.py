"""Usage: the caller's own spend on model calls in a calendar month (UTC), from their spend ledger
(`SpendLedger`, one Temporal workflow per user per month, written by the worker for every call).
An admin may read any user's (`?user=`; logged with who asked)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from temporalio.service import RPCError, RPCStatusCode

from kron.common.logging import get_logger
from kron.contracts import names
from kron.contracts.spend import MonthlySpend, month_of, spend_ledger_id
from kron.gateway.deps import Caller, Runs
from kron.gateway.errors import ApiError, error_responses
from kron.gateway.schemas import UsageReport
from kron.gateway.tokens import USER_ID_PATTERN

log = get_logger(__name__)
router = APIRouter(prefix="/usage", tags=["usage"])

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


@router.get(
    "",
    operation_id="get_usage",
    response_model=UsageReport,
    responses=error_responses(401, 403, 422, 503),
    summary="Your spend on model calls this month (or another): total, by model, by schedule",
)
async def get_usage(
    caller: Caller,
    runs: Runs,
    month: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default this month.")] = None,
    user_id: Annotated[
        str | None, Query(alias="user", pattern=USER_ID_PATTERN, description="Another user's usage (admins only).")
    ] = None,
) -> UsageReport:
    month = month or month_of(datetime.now(UTC))
    user = caller.user_id
    if user_id is not None and user_id != caller.user_id:
        if not caller.is_admin:
            raise ApiError(403, "forbidden", "Only an admin can read another user's usage")
        log.info("admin action", admin=caller.user_id, action="read_usage", owner=user_id, month=month)
        user = user_id
    # The ledger lives beside the runs, in the same namespace: the run store's client and deadline.
    handle = runs.client.get_workflow_handle(spend_ledger_id(user, month))
    try:
        spend: MonthlySpend = await handle.query(
            names.QUERY_SPEND,
            result_type=MonthlySpend,
            rpc_timeout=runs.query_timeout,
        )
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:  # no priced call yet that month
            spend = MonthlySpend(user_id=user, month=month)
        else:
            log.warning("usage query failed", rpc_status=error.status.name if error.status else None)
            raise ApiError(503, "usage_unavailable", "Could not read your usage; try again shortly",
                           headers={"Retry-After": "2"}) from None
    except Exception as error:  # noqa: BLE001 - the query itself failed (no worker answered)
        log.warning("usage query failed", exc_type=type(error).__name__)
        raise ApiError(503, "usage_unavailable", "Could not read your usage; try again shortly",
                       headers={"Retry-After": "2"}) from None
    return UsageReport(
        month=month,
        total_usd=spend.total_usd,
        model_calls=spend.model_calls,
        unpriced_calls=spend.unpriced_calls,
        by_model=spend.by_model,
        by_schedule=spend.by_schedule,
    )
