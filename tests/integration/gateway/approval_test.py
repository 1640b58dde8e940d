"""Human decisions through the gateway: approve/deny gated tool calls, resolve unknown outcomes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kron_testing import fake_anthropic as replies
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import Stack, spawn_worker
from ..side_effect_safety_test import add_slow_tool
from .conftest import Gateway, eventually, unique_user


async def _waiting(gateway: Gateway, user: str, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        task = await gateway.task(user, task_id)
        assert task["status"] == "waiting", task["status"]
        return task

    return await eventually(check, timeout=20)


async def test_approve_runs_the_waiting_call_and_deny_tells_the_model(
    gateway: Gateway, running_stack: Stack
) -> None:
    user = unique_user()
    toolkit = running_stack.add_step_tool(user_id=user)
    running_stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND")
    response = await gateway.dispatch(user, toolkits=[toolkit], approval_required=["notes"])
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    headers = await gateway.headers(user)

    task = await _waiting(gateway, user, task_id)
    assert [c["name"] for c in task["pending_approval"]["calls"]] == ["NOTES_APPEND"]
    assert running_stack.composio.execution_count() == 0

    # Someone else cannot decide (404, as for any other user's task).
    other = await gateway.headers(unique_user("mallory"))
    assert (await gateway.http.post(f"/tasks/{task_id}/approve", headers=other)).status_code == 404

    approved = await gateway.http.post(f"/tasks/{task_id}/approve", headers=headers)
    assert approved.status_code == 202 and approved.json()["calls"] == ["NOTES_APPEND"]

    await _waiting(gateway, user, task_id)  # turn 1 asks again
    denied = await gateway.http.post(
        f"/tasks/{task_id}/deny", json={"reason": "no more notes"}, headers=headers
    )
    assert denied.status_code == 202 and denied.json()["approved"] is False

    final = await gateway.wait_until_terminal(user, task_id)
    assert final["status"] == "completed"
    assert running_stack.composio.execution_count() == 1
    last = running_stack.llm.requests[-1].body or {}
    assert "no more notes" in str(last["messages"][-1]["content"])

    again = await gateway.http.post(f"/tasks/{task_id}/approve", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "task_finished"


async def test_approve_without_a_waiting_call_is_a_409(gateway: Gateway, running_stack: Stack) -> None:
    user = unique_user()
    running_stack.llm.enqueue(replies.delay(3, replies.text("done")))
    task_id = (await gateway.dispatch(user)).json()["task_id"]
    headers = await gateway.headers(user)

    async def no_pending() -> int:
        response = await gateway.http.post(f"/tasks/{task_id}/approve", headers=headers)
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "nothing_to_approve"
        return response.status_code

    await eventually(no_pending, timeout=10)


async def test_resolve_an_unknown_tool_outcome_after_a_crash(
    gateway: Gateway, stack: Stack, temporal_server: TemporalDevServer
) -> None:
    user = unique_user()
    release = threading.Event()
    add_slow_tool(stack, "NOTES_APPEND", release)
    stack.composio.connect(user, "notes")
    stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    first = spawn_worker(stack, temporal_server)
    try:
        task_id = (await gateway.dispatch(user, toolkits=["notes"])).json()["task_id"]
        headers = await gateway.headers(user)
        nothing = await gateway.http.post(f"/tasks/{task_id}/resolve", json={"action": "skip"},
                                          headers=headers)
        assert nothing.status_code in (409, 503)  # nothing unknown yet (or no answer yet)
        for _ in range(300):
            if stack.composio.execution_count():
                break
            await asyncio.sleep(0.1)
    finally:
        first.kill()  # dies while the unsafe call runs
    release.set()
    second = spawn_worker(stack, temporal_server)
    try:
        async def unknown() -> dict[str, Any]:
            task = await gateway.task(user, task_id)
            assert task["pending_unknown"], task["status"]
            return task

        task = await eventually(unknown, timeout=30)
        assert task["status"] == "waiting"
        bad = await gateway.http.post(f"/tasks/{task_id}/resolve", json={"action": "maybe"},
                                      headers=headers)
        assert bad.status_code == 422
        resolved = await gateway.http.post(f"/tasks/{task_id}/resolve", json={"action": "skip"},
                                           headers=headers)
        assert resolved.status_code == 202, resolved.text
        assert resolved.json()["keys"] == [task["pending_unknown"][0]["idempotency_key"]]
        final = await gateway.wait_until_terminal(user, task_id)
    finally:
        second.terminate()
    assert final["status"] == "completed"
    assert [s["outcome_unknown"] for s in final["steps"] if s["kind"] == "tool"] == [True]
    assert stack.composio.execution_count() == 1
