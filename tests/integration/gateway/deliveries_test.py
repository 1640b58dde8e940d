"""`GET /tasks/{id}/deliveries` and the dispatch's `webhook_events`, through the real app."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook

from kron_testing import fake_anthropic as replies

from ..conftest import WEBHOOK_SECRET, Stack
from ..webhooks_test import Receiver
from .conftest import GatewayFactory, eventually, unique_user


async def test_the_owner_sees_each_event_and_its_attempts_others_get_404(
    make_gateway: GatewayFactory, running_stack: Stack
) -> None:
    gateway = await make_gateway(webhook_allow_private_networks=True)
    user = unique_user("alice")
    running_stack.llm.enqueue(replies.text("delivered eventually"))
    with Receiver(503, then=200) as receiver:
        response = await gateway.dispatch(user, callback_url=receiver.url, webhook_events=["run.completed"])
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        await gateway.wait_until_terminal(user, task_id)
        headers = await gateway.headers(user)

        async def delivered() -> dict[str, Any]:
            answer = await gateway.http.get(f"/tasks/{task_id}/deliveries", headers=headers)
            assert answer.status_code == 200, answer.text
            [entry] = answer.json()["deliveries"]
            assert entry["state"] == "delivered", entry
            return dict(entry)

        entry = await eventually(delivered, timeout=20)
        assert len(receiver.received) == 2
        Webhook(WEBHOOK_SECRET).verify(receiver.received[1].body, receiver.received[1].headers)
    assert entry["event"] == "run.completed"
    assert entry["webhook_id"] == receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
    assert (entry["attempts"], entry["last_status_code"], entry["last_error"], entry["next_attempt_at"]) == (
        2, 200, None, None
    )

    stranger = await gateway.http.get(f"/tasks/{task_id}/deliveries", headers=await gateway.headers(unique_user("eve")))
    assert stranger.status_code == 404 and stranger.json()["error"] == "not_found"
    missing = await gateway.http.get("/tasks/run-doesnotexist/deliveries", headers=headers)
    assert missing.status_code == 404


async def test_a_task_without_webhooks_has_an_empty_log(make_gateway: GatewayFactory, running_stack: Stack) -> None:
    gateway = await make_gateway()
    user = unique_user("bob")
    running_stack.llm.enqueue(replies.text("no hook"))
    response = await gateway.dispatch(user)
    task_id = response.json()["task_id"]
    await gateway.wait_until_terminal(user, task_id)
    answer = await gateway.http.get(f"/tasks/{task_id}/deliveries", headers=await gateway.headers(user))
    assert answer.status_code == 200 and answer.json() == {"deliveries": []}


async def test_a_dispatch_chooses_run_event_types_only(make_gateway: GatewayFactory, running_stack: Stack) -> None:
    gateway = await make_gateway()
    for events in (["schedule.fire_failed"], ["run.exploded"], "run.completed"):
        response = await gateway.dispatch(unique_user(), webhook_events=events)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"
        assert response.json()["errors"][0]["loc"][:2] == ["body", "webhook_events"]
