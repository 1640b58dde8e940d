"""Following a run as it happens (SSE) and cancelling it: gracefully, then outright after the grace
period, even when the gateway that accepted the cancel is gone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from kron.common.transcripts import LocalTranscriptStore, TranscriptMissing
from kron.contracts import names
from kron.contracts.models import RunStatus
from kron.gateway.app import create_app
from kron_testing import fake_anthropic as replies
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import Stack
from .conftest import Gateway, GatewayFactory, settings_for, unique_user


async def _read_events(gateway: Gateway, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every event of the stream, with its arrival time, until the server closes it."""
    events: list[dict[str, Any]] = []
    async with gateway.http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "event" in event:
                    events.append({**event, "at": time.monotonic()})
                event = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                event[field] = json.loads(value) if field == "data" else value
    return events


async def test_event_stream_sends_every_step_once_as_it_happens_then_closes(
    served_gateway: Gateway, running_stack: Stack
) -> None:
    gateway = served_gateway
    user = unique_user()
    toolkit = running_stack.add_step_tool(user_id=user)
    scripted = replies.scripted_agent(3, "NOTES_APPEND", final_text="Three notes.")
    # Each model call takes a moment, so the run is visibly in progress while we listen.
    running_stack.llm.responder = lambda body, i: replies.delay(0.3, scripted(body, i))
    headers = await gateway.headers(user)
    task_id = (await gateway.dispatch(user, toolkit=toolkit)).json()["task_id"]

    events = await _read_events(gateway, f"/tasks/{task_id}/events", headers)

    steps = [e for e in events if e["event"] == "step"]
    assert [s["data"]["index"] for s in steps] == list(range(7))  # 4 model + 3 tool steps, once each
    assert [s["id"] for s in steps] == [str(i) for i in range(7)]
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "completed" and "running" in statuses
    assert len(statuses) == len(set(statuses))  # a status is announced when it changes, once
    end = events[-1]
    assert end["event"] == "end" and end["data"]["status"] == "completed"
    assert end["data"]["output"] == "Three notes." and "steps" not in end["data"]
    # Streamed, not buffered: the first step arrived well before the run ended.
    assert end["at"] - steps[0]["at"] > 0.5

    # Resuming after step 4 replays only what came after; a finished run ends at once.
    resumed = await _read_events(gateway, f"/tasks/{task_id}/events", {**headers, "Last-Event-ID": "4"})
    assert [e["data"]["index"] for e in resumed if e["event"] == "step"] == [5, 6]
    assert resumed[-1]["event"] == "end"


async def test_graceful_cancel_stops_after_the_step_in_flight(
    make_gateway: GatewayFactory, running_stack: Stack
) -> None:
    gateway = await make_gateway(cancel_grace_seconds=30)
    user = unique_user()
    toolkit = running_stack.add_step_tool(user_id=user)
    scripted = replies.scripted_agent(50, "NOTES_APPEND")
    running_stack.llm.responder = lambda body, i: replies.delay(0.5, scripted(body, i))
    headers = await gateway.headers(user)
    task_id = (await gateway.dispatch(user, toolkit=toolkit)).json()["task_id"]
    assert await asyncio.to_thread(running_stack.llm.wait_for_requests, 1)

    response = await gateway.http.delete(f"/tasks/{task_id}", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"task_id": task_id, "status": "cancelling", "hard_cancel_after_seconds": 30.0}

    task = await gateway.wait_until_terminal(user, task_id, timeout=20)
    assert task["status"] == "cancelled"
    assert task["usage"]["model_calls"] >= 1 and task["turns"] < 50
    again = await gateway.http.delete(f"/tasks/{task_id}", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "task_finished"


async def test_hard_cancel_after_the_grace_period(make_gateway: GatewayFactory, running_stack: Stack) -> None:
    gateway = await make_gateway(cancel_grace_seconds=0.5)
    user = unique_user()
    running_stack.llm.responder = lambda body, i: replies.delay(60, replies.text("too late"))
    headers = await gateway.headers(user)
    task_id = (await gateway.dispatch(user)).json()["task_id"]
    assert await asyncio.to_thread(running_stack.llm.wait_for_requests, 1)

    started = time.monotonic()
    assert (await gateway.http.delete(f"/tasks/{task_id}", headers=headers)).status_code == 202
    task = await gateway.wait_until_terminal(user, task_id, timeout=20)
    assert task["status"] == "cancelled" and task["execution_status"] == "cancelled"
    assert time.monotonic() - started < 15  # not the 60 s model call


async def test_the_hard_cancel_holds_when_the_gateway_that_accepted_it_is_gone(
    running_stack: Stack, temporal_server: TemporalDevServer, client: Client
) -> None:
    # The grace timer is in the run's history, not in the gateway: stop the gateway right after the
    # DELETE and the run is still cancelled outright once the grace period is over.
    running_stack.llm.responder = lambda body, i: replies.delay(60, replies.text("too late"))
    app = create_app(settings_for(running_stack, temporal_server, cancel_grace_seconds=1), temporal_client=client)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            gateway = Gateway(app, http, app.state.gateway.settings)
            user = unique_user()
            task_id = (await gateway.dispatch(user)).json()["task_id"]
            assert await asyncio.to_thread(running_stack.llm.wait_for_requests, 1)
            deleted = await http.delete(f"/tasks/{task_id}", headers=await gateway.headers(user))
            assert deleted.status_code == 202, deleted.text
    started = time.monotonic()
    handle = client.get_workflow_handle(task_id)
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout=20)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert time.monotonic() - started < 15  # not the 60 s model call
    assert await handle.query(names.QUERY_STATUS, result_type=RunStatus) == RunStatus.CANCELLED


async def test_delete_of_a_finished_task_deletes_its_transcript(
    gateway: Gateway, running_stack: Stack, tmp_path: Path
) -> None:
    user = unique_user()
    toolkit = running_stack.add_step_tool(user_id=user)
    running_stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    headers = await gateway.headers(user)
    task_id = (await gateway.dispatch(user, toolkit=toolkit)).json()["task_id"]
    await gateway.wait_until_terminal(user, task_id)
    # The gateway's store, as the worker filled it for this run (the in-process worker here keeps
    # its own transcripts in memory).
    store = LocalTranscriptStore(tmp_path)
    kept = await store.put(task_id, b'"the goal"')
    other = await store.put("another-task", b'"not this one"')
    gateway.app.state.gateway.transcripts = store

    response = await gateway.http.delete(f"/tasks/{task_id}", headers=headers)
    assert response.status_code == 409 and response.json()["error"] == "task_finished"
    assert "transcript is deleted" in response.json()["detail"]
    with pytest.raises(TranscriptMissing):
        await LocalTranscriptStore(tmp_path).get(task_id, kept)  # a fresh store: no cache
    assert await LocalTranscriptStore(tmp_path).get("another-task", other) == b'"not this one"'
