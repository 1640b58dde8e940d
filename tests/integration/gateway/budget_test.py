"""USD budgets through the API: dispatch with `budget_usd`, see the pause (GET and SSE), raise it
with PATCH, read the month's spend with GET /usage; bad budgets are 422s, a finished task a 409.

A call costs $0.0004 here (claude-sonnet-5 list price; the fake answers 100 input, 20 output tokens).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kron_testing import fake_anthropic as replies

from ..conftest import Stack
from .conftest import Gateway, unique_user

CALL_USD = 0.0004
MODEL = "claude-sonnet-5"


async def _until_paused(gateway: Gateway, user: str, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = await gateway.task(user, task_id)
        if task["status"] == "paused":
            return task
        assert time.monotonic() < deadline, f"task still {task['status']}"
        await asyncio.sleep(0.1)


async def test_a_paused_run_shows_why_and_patch_resumes_it(gateway: Gateway, running_stack: Stack) -> None:
    user = unique_user("budget")
    toolkit = running_stack.add_step_tool(user_id=user)
    running_stack.llm.responder = replies.scripted_agent(4, "NOTES_APPEND", final_text="all notes")
    response = await gateway.dispatch(user, toolkit=toolkit, model=MODEL, budget_usd=0.001)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]

    task = await _until_paused(gateway, user, task_id)
    assert task["execution_status"] == "running" and task["budget_usd"] == 0.001
    assert task["paused"]["reason"] == "budget_reached" and task["paused"]["budget"] == "run"
    assert task["paused"]["spent_usd"] == pytest.approx(3 * CALL_USD)
    assert task["paused"]["limit_usd"] == 0.001
    assert task["usage"]["cost_usd"] == pytest.approx(3 * CALL_USD)

    headers = await gateway.headers(user)
    for bad in (-1, 0, 1e12, "lots"):
        refused = await gateway.http.patch(f"/tasks/{task_id}", json={"budget_usd": bad}, headers=headers)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["error"] == "validation_error" and refused.json()["detail"]
    other = await gateway.http.patch(f"/tasks/{task_id}", json={"budget_usd": 1},
                                     headers=await gateway.headers(unique_user("other")))
    assert other.status_code == 404

    raised = await gateway.http.patch(f"/tasks/{task_id}", json={"budget_usd": 0.01}, headers=headers)
    assert raised.status_code == 202, raised.text
    assert raised.json() == {"task_id": task_id, "budget_usd": 0.01, "spent_usd": pytest.approx(3 * CALL_USD)}
    task = await gateway.wait_until_terminal(user, task_id)
    assert task["status"] == "completed" and task["output"] == "all notes" and task["paused"] is None
    assert task["usage"]["cost_usd"] == pytest.approx(5 * CALL_USD)
    assert [s["cost_usd"] for s in task["steps"] if s["kind"] == "model"] == pytest.approx([CALL_USD] * 5)

    finished = await gateway.http.patch(f"/tasks/{task_id}", json={"budget_usd": 1}, headers=headers)
    assert finished.status_code == 409 and finished.json()["error"] == "task_finished"

    usage = await gateway.http.get("/usage", headers=headers)
    assert usage.status_code == 200, usage.text
    report = usage.json()
    assert report["model_calls"] == 5 and report["unpriced_calls"] == 0
    assert report["total_usd"] == pytest.approx(5 * CALL_USD)
    assert report["by_model"] == pytest.approx({MODEL: 5 * CALL_USD})
    assert report["by_schedule"] == {}
    assert len(report["month"]) == 7


async def test_the_pause_is_an_sse_status_event(served_gateway: Gateway, running_stack: Stack) -> None:
    user = unique_user("sse")
    toolkit = running_stack.add_step_tool(user_id=user)
    running_stack.llm.responder = replies.scripted_agent(4, "NOTES_APPEND")
    response = await served_gateway.dispatch(user, toolkit=toolkit, model=MODEL, budget_usd=0.0005)
    task_id = response.json()["task_id"]
    headers = await served_gateway.headers(user)
    paused: dict[str, Any] | None = None
    async with served_gateway.http.stream("GET", f"/tasks/{task_id}/events", headers=headers) as stream:
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "status":
                data = json.loads(line.removeprefix("data: "))
                if data["status"] == "paused":
                    paused = data
                    break
    assert paused is not None
    assert paused["paused"]["budget"] == "run" and paused["paused"]["limit_usd"] == 0.0005
    assert paused["usage"]["cost_usd"] == pytest.approx(2 * CALL_USD)
    await served_gateway.http.delete(f"/tasks/{task_id}", headers=headers)


async def test_an_unknown_model_price_is_unknown_in_the_task_and_usage(
    gateway: Gateway, running_stack: Stack
) -> None:
    user = unique_user("unpriced")
    running_stack.llm.enqueue(replies.text("hi"))
    response = await gateway.dispatch(user, model="claude-unreleased-9")
    task = await gateway.wait_until_terminal(user, response.json()["task_id"])
    assert task["status"] == "completed" and task["usage"]["cost_usd"] is None
    report = (await gateway.http.get("/usage", headers=await gateway.headers(user))).json()
    assert report["model_calls"] == 1 and report["unpriced_calls"] == 1 and report["total_usd"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"goal": "x", "budget_usd": -1}',
        '{"goal": "x", "budget_usd": 0}',
        '{"goal": "x", "budget_usd": NaN}',
        '{"goal": "x", "budget_usd": Infinity}',
        '{"goal": "x", "budget_usd": 1e300}',
        '{"goal": "x", "budget_usd": 2000000}',
        '{"goal": "x", "budget_usd": "ten"}',
        '{"goal": "x", "budget_pause_timeout_seconds": 0}',
        '{"goal": "x", "unknown_outcome_timeout_seconds": 0}',
        '{"goal": "x", "unknown_outcome_timeout_seconds": 99999999}',
    ],
)
async def test_bad_budgets_are_422_and_start_nothing(gateway: Gateway, stack: Stack, raw: str) -> None:
    user = unique_user("bad")
    headers = {**await gateway.headers(user), "Content-Type": "application/json"}
    response = await gateway.http.post("/tasks/dispatch", content=raw, headers=headers)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error" and body["detail"]
    assert stack.llm.request_count == 0


async def test_dispatch_passes_budget_and_unknown_outcome_timeout_to_the_run(
    gateway: Gateway, stack: Stack
) -> None:
    user = unique_user("fields")
    response = await gateway.dispatch(
        user, budget_usd=2.5, budget_pause_timeout_seconds=600, unknown_outcome_timeout_seconds=120
    )
    assert response.status_code == 202, response.text
    history = await stack.client.get_workflow_handle(response.json()["task_id"]).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    run_input = json.loads(started.input.payloads[0].data)
    assert run_input["budget_usd"] == 2.5
    assert run_input["budget_pause_timeout_seconds"] == 600
    assert run_input["unknown_outcome_timeout_seconds"] == 120
    await stack.client.get_workflow_handle(response.json()["task_id"]).terminate()


async def test_usage_month_must_be_a_month(gateway: Gateway) -> None:
    headers = await gateway.headers(unique_user("month"))
    assert (await gateway.http.get("/usage", params={"month": "2026-13"}, headers=headers)).status_code == 422
    empty = await gateway.http.get("/usage", params={"month": "2001-01"}, headers=headers)
    assert empty.status_code == 200 and empty.json()["model_calls"] == 0 and empty.json()["total_usd"] == 0
