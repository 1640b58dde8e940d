"""Dispatching runs through the gateway: preflight, start, result, idempotency, limits, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kron.contracts import names
from kron_testing import fake_anthropic as replies
from kron_testing.prompt_cache import breakpoints

from ..conftest import Stack
from .conftest import Gateway, GatewayFactory, eventually, unique_user


async def test_dispatch_runs_to_completion_and_reports_steps_usage_and_result(
    gateway: Gateway, running_stack: Stack
) -> None:
    user = unique_user("alice")
    toolkit = running_stack.add_step_tool(user_id=user)
    running_stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND", final_text="Two notes appended.")

    response = await gateway.dispatch(user, toolkit=toolkit, model="claude-sonnet-4-5", max_iterations=10)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["replayed"] is False
    assert response.headers["location"] == f"/tasks/{accepted['task_id']}"

    task = await gateway.wait_until_terminal(user, accepted["task_id"])
    assert task["status"] == "completed" and task["execution_status"] == "completed"
    assert task["output"] == "Two notes appended."
    assert task["usage"]["model_calls"] == 3 and task["usage"]["tool_calls"] == 2
    assert [(s["index"], s["kind"]) for s in task["steps"]] == [
        (0, "model"), (1, "tool"), (2, "model"), (3, "tool"), (4, "model"),
    ]
    assert task["toolkits"] == ["notes"] and task["model"] == "claude-sonnet-4-5"
    assert task["goal"] == "append some notes" and task["closed_at"] is not None
    assert running_stack.llm.requests[0].body is not None
    assert running_stack.llm.requests[0].body["model"] == "claude-sonnet-4-5"
    # The run carries the owner as a search attribute (what listing and ownership rely on).
    description = await running_stack.client.get_workflow_handle(accepted["task_id"]).describe()
    assert description.workflow_type == names.AGENT_WORKFLOW
    assert description.search_attributes[names.SEARCH_ATTRIBUTE_USER] == [user]


async def test_a_dispatch_cache_ttl_reaches_the_model_request(gateway: Gateway, running_stack: Stack) -> None:
    user = unique_user()
    running_stack.llm.responder = lambda body, i: replies.text("ok")
    response = await gateway.dispatch(user, cache_ttl="1h")
    assert response.status_code == 202, response.text
    await gateway.wait_until_terminal(user, response.json()["task_id"])
    assert {ttl for _, ttl in breakpoints(running_stack.llm.requests[0].body or {})} == {"1h"}


async def test_a_task_no_worker_has_picked_up_is_queued(gateway: Gateway) -> None:
    user = unique_user()
    task_id = (await gateway.dispatch(user)).json()["task_id"]
    task = await gateway.task(user, task_id)
    assert task["status"] == "queued" and task["live"] is False and task["steps"] == []


async def test_unconnected_toolkit_is_409_with_a_connect_link_and_starts_nothing(
    gateway: Gateway, stack: Stack
) -> None:
    user = unique_user()
    stack.composio.connect(user, "notes")  # connected to one toolkit, not the other
    response = await gateway.dispatch(user, toolkits=["notes", "github"])

    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "toolkit_not_connected" and body["toolkit"] == "github"
    link = stack.composio.links[-1]
    assert body["connect_url"] == link.redirect_url
    assert (link.user_id, link.toolkit) == (user, "github")
    assert "detail" in body
    # Nothing started: visibility has no task for this user (given time to catch up).
    await asyncio.sleep(1.0)
    assert await gateway.list_ids(user) == []
    assert stack.llm.request_count == 0


async def test_connected_toolkits_pass_preflight_case_insensitively(gateway: Gateway, stack: Stack) -> None:
    user = unique_user()
    stack.composio.connect(user, "github")
    response = await gateway.dispatch(user, toolkit="GitHub", toolkits=["github"])
    assert response.status_code == 202, response.text
    metrics = (await gateway.http.get("/metrics")).text
    assert 'kron_preflight_total{outcome="connected"} 1.0' in metrics
    assert 'kron_dispatches_total{outcome="started"} 1.0' in metrics


async def test_composio_down_is_503_not_a_started_run(gateway: Gateway, stack: Stack) -> None:
    user = unique_user()
    stack.composio.stop()
    response = await gateway.dispatch(user, toolkits=["github"])
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "preflight_unavailable"
    assert "ck-" not in response.text  # the Composio key never leaks into a response


async def test_idempotency_key_returns_the_same_task(gateway: Gateway, running_stack: Stack) -> None:
    user, other = unique_user(), unique_user()
    running_stack.llm.responder = replies.scripted_agent(0, "NOTES_APPEND", final_text="ok")
    key = {"Idempotency-Key": "order-42"}

    first = await gateway.dispatch(user, headers=key, goal="say ok")
    second = await gateway.dispatch(user, headers=key, goal="say ok")
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    assert (first.json()["replayed"], second.json()["replayed"]) == (False, True)

    # After the run finished the key still names it (Temporal rejects a duplicate id).
    await gateway.wait_until_terminal(user, first.json()["task_id"])
    third = await gateway.dispatch(user, headers=key, goal="say ok")
    assert third.json() == {"task_id": first.json()["task_id"], "status": "completed", "replayed": True}

    # Another user's identical key is another task; the same key for another request is refused.
    theirs = await gateway.dispatch(other, headers=key, goal="say ok")
    assert theirs.status_code == 202 and theirs.json()["task_id"] != first.json()["task_id"]
    changed = await gateway.dispatch(user, headers=key, goal="something else")
    assert changed.status_code == 422, changed.text
    assert changed.json()["error"] == "idempotency_key_reused"
    await gateway.wait_until_terminal(other, theirs.json()["task_id"])
    assert running_stack.llm.request_count == 2  # one run each for user and other


async def test_concurrent_retries_with_one_key_start_one_run(gateway: Gateway) -> None:
    user = unique_user()
    responses = await asyncio.gather(
        *(gateway.dispatch(user, headers={"Idempotency-Key": "burst"}) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["task_id"] for r in responses}) == 1
    assert sorted(r.json()["replayed"] for r in responses) == [False, True, True, True, True]


async def test_dispatch_rate_limit_is_per_user_429_with_retry_after(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(dispatch_burst=2, dispatch_rate_per_second=0.1)
    user, other = unique_user(), unique_user()
    statuses = [(await gateway.dispatch(user)).status_code for _ in range(2)]
    limited = await gateway.dispatch(user)
    assert statuses == [202, 202]
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited" and "detail" in limited.json()
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    assert (await gateway.dispatch(other)).status_code == 202


INVALID_BODIES: list[tuple[str, Any, int, str]] = [
    ("not json", b"{goal: nope", 422, "validation_error"),
    ("a list", [1, 2], 422, "validation_error"),
    ("no goal", {}, 422, "validation_error"),
    ("blank goal", {"goal": "   "}, 422, "validation_error"),
    ("unknown field", {"goal": "x", "admin": True}, 422, "validation_error"),
    ("goal too long", {"goal": "x" * 32_001}, 422, "validation_error"),
    ("model not allowed", {"goal": "x", "model": "gpt-4o"}, 422, "validation_error"),
    ("model too long", {"goal": "x", "model": "claude-" + "a" * 100}, 422, "validation_error"),
    ("iterations above the cap", {"goal": "x", "max_iterations": 101}, 422, "validation_error"),
    ("iterations zero", {"goal": "x", "max_iterations": 0}, 422, "validation_error"),
    ("budget above the cap", {"goal": "x", "budget": 5_000_001}, 422, "validation_error"),
    ("negative budget", {"goal": "x", "budget": -1}, 422, "validation_error"),
    ("ftp callback", {"goal": "x", "callback_url": "ftp://example.com/hook"}, 422, "validation_error"),
    ("javascript callback", {"goal": "x", "callback_url": "javascript:alert(1)"}, 422, "validation_error"),
    ("loopback callback", {"goal": "x", "callback_url": "http://127.0.0.1:8080/admin"}, 422, "validation_error"),
    ("cloud metadata callback", {"goal": "x", "callback_url": "http://169.254.169.254/latest/"}, 422,
     "validation_error"),
    ("localhost callback", {"goal": "x", "callback_url": "http://localhost/"}, 422, "validation_error"),
    ("callback with credentials", {"goal": "x", "callback_url": "https://u:p@example.com/"}, 422, "validation_error"),
    ("hex loopback callback", {"goal": "x", "callback_url": "http://0x7f000001/"}, 422, "validation_error"),
    ("decimal loopback callback", {"goal": "x", "callback_url": "http://2130706433/"}, 422, "validation_error"),
    ("octal loopback callback", {"goal": "x", "callback_url": "http://0177.0.0.1/"}, 422, "validation_error"),
    ("short loopback callback", {"goal": "x", "callback_url": "http://127.1/"}, 422, "validation_error"),
    ("zero callback", {"goal": "x", "callback_url": "http://0/"}, 422, "validation_error"),
    ("idna localhost callback", {"goal": "x", "callback_url": "http://\u24dbocalhost/"}, 422, "validation_error"),
    ("budget true", {"goal": "x", "budget": True}, 422, "validation_error"),
    ("budget as text", {"goal": "x", "budget": "10"}, 422, "validation_error"),
    ("budget as float", {"goal": "x", "budget": 10.0}, 422, "validation_error"),
    ("iterations as text", {"goal": "x", "max_iterations": "5"}, 422, "validation_error"),
    ("iterations false", {"goal": "x", "max_iterations": False}, 422, "validation_error"),
    ("approval timeout as text", {"goal": "x", "approval_timeout_seconds": "60"}, 422, "validation_error"),
    ("bad toolkit slug", {"goal": "x", "toolkits": ["../etc"]}, 422, "validation_error"),
    ("too many toolkits", {"goal": "x", "toolkits": [f"t{i}" for i in range(17)]}, 422, "validation_error"),
    ("wrong type", {"goal": 5}, 422, "validation_error"),
    ("unknown cache ttl", {"goal": "x", "cache_ttl": "2h"}, 422, "validation_error"),
    ("oversized body", {"goal": "x" * 70_000}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(("name", "body", "status", "error"), INVALID_BODIES, ids=[c[0] for c in INVALID_BODIES])
async def test_invalid_dispatches_are_4xx_json_and_start_nothing(
    gateway: Gateway, name: str, body: Any, status: int, error: str
) -> None:
    user = unique_user()
    headers = {**await gateway.headers(user), "content-type": "application/json"}
    if isinstance(body, bytes):
        response = await gateway.http.post("/tasks/dispatch", content=body, headers=headers)
    else:
        response = await gateway.http.post("/tasks/dispatch", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error and isinstance(response.json()["detail"], str)
    assert "x" * 100 not in response.text  # errors never echo the input back
    if "callback" in name and name not in ("ftp callback", "javascript callback"):
        assert [e["type"] for e in response.json()["errors"]] == ["callback_url_not_allowed"]


async def test_chunked_body_over_the_limit_is_413(gateway: Gateway) -> None:
    user = unique_user()

    async def chunks() -> Any:
        yield b'{"goal": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = await gateway.http.post(
        "/tasks/dispatch", content=chunks(),
        headers={**await gateway.headers(user), "content-type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


async def test_request_id_is_echoed_or_made(gateway: Gateway) -> None:
    given = await gateway.http.get("/livez", headers={"X-Request-ID": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = await gateway.http.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] not in ("", "bad id with spaces")
    missing = await gateway.http.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert missing.headers["x-request-id"]


async def test_metrics_use_route_templates_and_no_user_ids(gateway: Gateway) -> None:
    user = unique_user("metrics")
    task_id = (await gateway.dispatch(user)).json()["task_id"]
    await eventually(lambda: gateway.task(user, task_id))
    body = (await gateway.http.get("/metrics")).text
    assert 'kron_gateway_requests_total{method="GET",route="/tasks/{task_id}",status_class="2xx"}' in body
    assert 'kron_gateway_request_duration_seconds_bucket{le="0.005",method="POST",route="/tasks/dispatch"}' in body
    assert user not in body and task_id not in body
