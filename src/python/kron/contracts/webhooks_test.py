from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from kron.contracts.webhooks import (
    RunWebhookEvents,
    WebhookEvent,
    chosen,
    delivery_id,
)


def test_a_delivery_id_is_stable_per_event_and_distinct_across_events() -> None:
    assert delivery_id("run-1", WebhookEvent.RUN_COMPLETED) == delivery_id("run-1", WebhookEvent.RUN_COMPLETED)
    ids = {
        delivery_id("run-1", WebhookEvent.RUN_COMPLETED),
        delivery_id("run-2", WebhookEvent.RUN_COMPLETED),
        delivery_id("run-1", WebhookEvent.RUN_FAILED),
        delivery_id("run-1", WebhookEvent.RUN_WAITING, "approval/1"),
        delivery_id("run-1", WebhookEvent.RUN_WAITING, "approval/2"),
    }
    assert len(ids) == 5 and all(i.startswith("msg_") for i in ids)


def test_by_default_runs_send_terminal_events_and_schedules_also_failed_fires() -> None:
    assert chosen(None, WebhookEvent.RUN_COMPLETED) and chosen(None, WebhookEvent.RUN_CANCELLED)
    assert not chosen(None, WebhookEvent.RUN_WAITING) and not chosen(None, WebhookEvent.RUN_PAUSED)
    assert not chosen(None, WebhookEvent.SCHEDULE_FIRE_FAILED)
    assert chosen(None, WebhookEvent.SCHEDULE_FIRE_FAILED, schedule=True)
    assert chosen([WebhookEvent.RUN_WAITING], WebhookEvent.RUN_WAITING)
    assert not chosen([WebhookEvent.RUN_WAITING], WebhookEvent.RUN_COMPLETED)


def test_a_dispatch_chooses_run_events_only() -> None:
    adapter = TypeAdapter(RunWebhookEvents)
    assert adapter.validate_python(["run.waiting", "run.waiting"]) == [WebhookEvent.RUN_WAITING]
    with pytest.raises(ValidationError):
        adapter.validate_python(["schedule.fire_failed"])
    with pytest.raises(ValidationError):
        adapter.validate_python(["run.exploded"])
