"""A schedule's webhooks: a fire whose toolkit preflight fails sends `schedule.fire_failed` (no run
was started to say anything), and a fire's run sends the run events the schedule chose. Receivers
verify with the `standardwebhooks` library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook
from temporalio.service import RPCError, RPCStatusCode

from kron.common.schedules import ledger_id
from kron.contracts.schedules import DispatchStatus
from kron.contracts.webhooks import (
    DeliveryLog,
    DeliveryState,
    WebhookEvent,
    delivery_id,
    delivery_workflow_id,
)

from ..conftest import WEBHOOK_SECRET
from ..webhooks_test import Receiver, received
from .conftest import SLOW_MARKER, Scheduler, SlowFirstRuns, definition

HISTORIES = Path(__file__).parents[1] / "histories"


async def _record(scheduler: Scheduler, workflow_id: str, name: str) -> None:
    """With KRON_RECORD_HISTORY=1, commit-ready histories of the webhooks-v1 paths of the fire and
    ledger workflows (replayed by tests/integration/replay_test.py)."""
    if os.environ.get("KRON_RECORD_HISTORY"):
        history = await scheduler.client.get_workflow_handle(workflow_id).fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_a_fire_that_fails_its_preflight_sends_fire_failed(scheduler: Scheduler) -> None:
    composio = scheduler.stack.composio
    toolkit = scheduler.stack.add_step_tool(user_id=scheduler.user)
    with Receiver() as receiver:
        view = await scheduler.create(
            definition(run={"goal": "append notes", "toolkits": [toolkit], "callback_url": receiver.url})
        )
        composio.disconnect(scheduler.user, toolkit)
        await scheduler.store.trigger(view)
        [record] = await scheduler.wait_for_history(view, lambda rs: len(rs) == 1)
        assert record.dispatch is DispatchStatus.PREFLIGHT_FAILED
        [delivery] = await received(receiver, WebhookEvent.SCHEDULE_FIRE_FAILED)
        payload = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
        log = await scheduler.client.get_workflow_handle(
            delivery_workflow_id(record.fire_id), result_type=DeliveryLog
        ).result()
    assert payload["type"] == "schedule.fire_failed"
    assert payload["data"]["schedule"] == view.definition.name
    fire = payload["data"]["fire"]
    assert fire["fire_id"] == record.fire_id and fire["dispatch"] == "preflight_failed"
    assert fire["toolkit"] == toolkit and fire["connect_url"].startswith("http")
    assert delivery.headers["webhook-id"] == delivery_id(record.fire_id, WebhookEvent.SCHEDULE_FIRE_FAILED)
    assert [(d.event, d.state) for d in log.deliveries] == [(WebhookEvent.SCHEDULE_FIRE_FAILED, DeliveryState.DELIVERED)]
    await _record(scheduler, record.fire_id, "scheduled_fire_webhook_fire_failed")


async def test_a_fires_run_sends_the_run_events_the_schedule_chose(scheduler: Scheduler) -> None:
    with Receiver() as receiver:
        view = await scheduler.create(definition(run={
            "goal": "summarise", "callback_url": receiver.url,
            "webhook_events": ["run.completed", "schedule.fire_failed"],
        }))
        await scheduler.store.trigger(view)
        [record] = await scheduler.wait_for_history(view, lambda rs: len(rs) == 1 and rs[0].outcome is not None)
        [delivery] = await received(receiver, WebhookEvent.RUN_COMPLETED)
        payload = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
    assert payload["data"]["task_id"] == record.task_id


async def test_a_schedule_that_did_not_choose_fire_failed_sends_nothing(scheduler: Scheduler) -> None:
    composio = scheduler.stack.composio
    toolkit = scheduler.stack.add_step_tool(user_id=scheduler.user)
    with Receiver() as receiver:
        view = await scheduler.create(definition(run={
            "goal": "append notes", "toolkits": [toolkit], "callback_url": receiver.url,
            "webhook_events": ["run.completed"],
        }))
        composio.disconnect(scheduler.user, toolkit)
        await scheduler.store.trigger(view)
        [record] = await scheduler.wait_for_history(view, lambda rs: len(rs) == 1)
        assert record.dispatch is DispatchStatus.PREFLIGHT_FAILED
        await scheduler.client.get_workflow_handle(record.fire_id).result()  # the fire is over
        described = scheduler.client.get_workflow_handle(delivery_workflow_id(record.fire_id))
        with pytest.raises(RPCError) as missing:  # no delivery workflow for an event nobody chose
            await described.describe()
        assert missing.value.status is RPCStatusCode.NOT_FOUND
        assert receiver.received == []


async def test_an_overlap_skip_sends_fire_skipped(scheduler: Scheduler) -> None:
    scheduler.stack.llm.responder = SlowFirstRuns(seconds=2.5)
    with Receiver() as receiver:
        view = await scheduler.create(definition(
            run={"goal": f"long digest {SLOW_MARKER}", "callback_url": receiver.url,
                 "webhook_events": ["schedule.fire_skipped"]},
            concurrency_policy="Forbid",
        ))
        await scheduler.store.trigger(view)
        await scheduler.wait_for_history(view, lambda rs: len(rs) == 1)
        await scheduler.store.trigger(view)  # overlaps the running fire: skipped
        records = await scheduler.wait_for_history(
            view, lambda rs: any(r.dispatch is DispatchStatus.SKIPPED_OVERLAP for r in rs)
        )
        [skip] = [r for r in records if r.dispatch is DispatchStatus.SKIPPED_OVERLAP]
        [delivery] = await received(receiver, WebhookEvent.SCHEDULE_FIRE_SKIPPED)
        payload = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
        await scheduler.wait_for_history(view, lambda rs: any(r.outcome is not None for r in rs))
    assert payload["data"]["schedule_id"] == view.schedule_id
    assert payload["data"]["fire"]["fire_id"] == skip.fire_id
    assert payload["data"]["fire"]["dispatch"] == "skipped_overlap"
    assert {r.envelope["type"] for r in receiver.received} == {"schedule.fire_skipped"}  # only what it chose
    await _record(scheduler, ledger_id(view.schedule_id), "schedule_ledger_webhook_fire_skipped")
