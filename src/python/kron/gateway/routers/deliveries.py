"""A task's webhook delivery log: every event sent (or being sent) to its callback_url, with its
attempts. Read from the run's delivery workflow (kron.contracts.webhooks); owner only, like every
task route (another user's task is a 404)."""

from __future__ import annotations

from fastapi import APIRouter
from temporalio.service import RPCError, RPCStatusCode

from kron.common.logging import get_logger
from kron.contracts.webhooks import QUERY_DELIVERIES, DeliveryLog, delivery_workflow_id
from kron.gateway.deps import CurrentUser, Runs
from kron.gateway.errors import ApiError, error_responses
from kron.gateway.routers.tasks import TaskIdPath

log = get_logger(__name__)
router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get(
    "/{task_id}/deliveries",
    operation_id="list_task_deliveries",
    response_model=DeliveryLog,
    responses=error_responses(401, 404, 422, 503),
    summary="A task's webhook deliveries: event, webhook-id, attempts, last status and error, next attempt",
)
async def list_deliveries(task_id: TaskIdPath, user: CurrentUser, runs: Runs) -> DeliveryLog:
    """Empty while the task has sent no webhook (none chosen, no callback_url, or none yet)."""
    await runs.owned(task_id, user)
    handle = runs.client.get_workflow_handle(delivery_workflow_id(task_id))
    try:
        answer: DeliveryLog = await handle.query(
            QUERY_DELIVERIES, result_type=DeliveryLog, rpc_timeout=runs.query_timeout
        )
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return DeliveryLog()
        raise
    except Exception as error:  # noqa: BLE001 - deadline, no worker, query failed: no answer
        log.info("deliveries query unanswered", exc_type=type(error).__name__)
        raise ApiError(503, "deliveries_unavailable", "No worker answered; try again shortly",
                       headers={"Retry-After": "1"}) from None
    return answer
