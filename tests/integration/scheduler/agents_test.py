"""Agent definitions on real Temporal: the /agents routes on the real gateway app, the registry
workflow on the `scheduler` fixture's worker, and runs of agents (pinned and unpinned) on the
agent worker of `running_stack`. A run keeps the version it started with while the agent changes;
the agent's tool policy is enforced (ask waits for a human, deny refuses the call)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.service import RPCError, RPCStatusCode

from kron.common.agents import SHARED_OWNER, AgentStore
from kron.contracts.agents import SHARED_REGISTRY_ID, AgentSpec, PutAgent
from kron.contracts.mcp import McpServer
from kron.contracts.models import AgentRef, RunStatus
from kron.contracts.schedules import DispatchStatus, FireRecord
from kron.gateway.app import create_app
from kron.gateway.settings import GatewaySettings
from kron.scheduler.declared_agents import AgentSync, YamlAgentSource
from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY
from .conftest import Scheduler, definition, eventually, unique
from .gateway_routes_test import JWT_SECRET, Api

HISTORIES = Path(__file__).parents[1] / "histories"


@pytest.fixture
async def api(scheduler: Scheduler, temporal_server: TemporalDevServer) -> AsyncIterator[Api]:
    settings = GatewaySettings(
        dev_mode=False,
        jwt_secret=SecretStr(JWT_SECRET),
        token_endpoint_enabled=True,
        temporal_address=temporal_server.address,
        task_queue=scheduler.stack.task_queue,
        composio_api_key=SecretStr(COMPOSIO_KEY),
        composio_base_url=scheduler.stack.composio.base_url,
        dispatch_rate_per_second=1000.0,
        dispatch_burst=1000,
        query_timeout_seconds=5.0,
    )
    app = create_app(settings, temporal_client=scheduler.client, schedule_settings=scheduler.settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:
        yield Api(app, http)


@pytest.fixture(autouse=True)
async def no_shared_registry_left(scheduler: Scheduler) -> AsyncIterator[None]:
    """Each test's scheduler polls its own task queue: a shared registry a test started would
    outlive its worker and leave later lookups waiting for nobody. Deleted after each test."""
    yield
    request = DeleteWorkflowExecutionRequest(
        namespace=scheduler.client.namespace, workflow_execution=WorkflowExecution(workflow_id=SHARED_REGISTRY_ID)
    )
    try:
        await scheduler.client.workflow_service.delete_workflow_execution(request)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise

    async def gone() -> None:
        with pytest.raises(RPCError):
            await scheduler.client.get_workflow_handle(SHARED_REGISTRY_ID).describe()

    await eventually(gone)


async def _task(api: Api, user: str, task_id: str) -> dict[str, Any]:
    response = await api.call("GET", f"/tasks/{task_id}", user)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _status(api: Api, user: str, task_id: str, *statuses: str) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        task = await _task(api, user, task_id)
        assert task["status"] in statuses, task["status"]
        return task

    result: dict[str, Any] = await eventually(check, timeout=30)
    return result


async def test_agent_versions_through_the_api(api: Api, scheduler: Scheduler) -> None:
    user, other, name = scheduler.user, unique("other"), unique("triage")
    created = await api.call("POST", "/agents", user, json={
        "name": name, "description": "sorts my inbox", "system_prompt": "You triage.",
        "limits": {"max_iterations": 5},
    })
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/agents/{name}"
    assert created.json()["latest_version"] == 1 and created.json()["shared"] is False
    again = await api.call("POST", "/agents", user, json={"name": name})
    assert again.status_code == 409 and again.json()["error"] == "agent_exists"

    patched = await api.call("PATCH", f"/agents/{name}", user, json={"system_prompt": "You triage, briefly."})
    assert patched.status_code == 200, patched.text
    assert patched.json()["latest_version"] == 2
    assert patched.json()["spec"]["limits"]["max_iterations"] == 5  # unchanged fields carried over
    versions = await api.call("GET", f"/agents/{name}/versions", user)
    assert [v["version"] for v in versions.json()["versions"]] == [1, 2]
    first = await api.call("GET", f"/agents/{name}/versions/1", user)
    assert first.status_code == 200 and first.json()["spec"]["system_prompt"] == "You triage."
    assert (await api.call("GET", f"/agents/{name}", user)).json()["spec"]["system_prompt"] == "You triage, briefly."

    # Per user: someone else has no such agent.
    assert (await api.call("GET", f"/agents/{name}", other)).status_code == 404
    assert name not in [a["name"] for a in (await api.call("GET", "/agents", other)).json()["agents"]]
    assert name in [a["name"] for a in (await api.call("GET", "/agents", user)).json()["agents"]]

    # Bad input: what is wrong, never a 500.
    for method, path, body in [
        ("POST", "/agents", {"name": "Not_A_Name"}),
        ("POST", "/agents", {"name": unique("x"), "limits": {"max_iterations": "10"}}),
        ("POST", "/agents", {"name": unique("x"), "tool_policy": {"permissions": {"github": "maybe"}}}),
        ("PATCH", f"/agents/{name}", {"max_tokens": 0}),
        ("PATCH", f"/agents/{name}", {"name": "renamed"}),
        ("GET", "/agents/Not_A_Name", None),
        ("GET", f"/agents/{name}/versions/0", None),
    ]:
        response = await api.call(method, path, user, json=body)
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["error"] == "validation_error" and response.json()["detail"]
    for method, path in [("GET", "/agents/nobody-has-this"), ("GET", f"/agents/{name}/versions/9"),
                         ("PATCH", "/agents/nobody-has-this"), ("DELETE", "/agents/nobody-has-this")]:
        response = await api.call(method, path, user, json={} if method == "PATCH" else None)
        assert response.status_code == 404 and response.json()["error"] == "agent_not_found", response.text
    assert (await api.call("POST", "/tasks/dispatch", user, json={"goal": "x", "agent": "nobody-has-this"})
            ).status_code == 404

    # Deleted: no new runs; created again, its versions go on from the last one.
    assert (await api.call("DELETE", f"/agents/{name}", user)).status_code == 204
    assert (await api.call("GET", f"/agents/{name}", user)).status_code == 404
    gone = await api.call("POST", "/tasks/dispatch", user, json={"goal": "x", "agent": name})
    assert gone.status_code == 404 and gone.json()["error"] == "agent_not_found"
    recreated = await api.call("POST", "/agents", user, json={"name": name})
    assert recreated.status_code == 201 and recreated.json()["latest_version"] == 3


async def test_a_run_keeps_its_version_while_the_agent_changes(api: Api, scheduler: Scheduler) -> None:
    """Ask waits for a human, deny refuses, and an update made while a run goes on changes nothing
    in that run: its second call still asks (v1), where v2 denies it at once."""
    stack, user, name = scheduler.stack, scheduler.user, unique("notes")
    toolkit = stack.add_step_tool(user_id=user)
    stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND")
    created = await api.call("POST", "/agents", user, json={
        "name": name, "system_prompt": "You keep notes (v1).", "toolkits": [toolkit],
        "tool_policy": {"permissions": {"notes": "ask"}}, "limits": {"max_iterations": 6, "budget_usd": 1.0},
        "approval_timeout_seconds": 600,
    })
    assert created.status_code == 201, created.text

    # Limits only tighten, toolkits only narrow, versions must exist.
    refusals: list[tuple[dict[str, Any], int]] = [
        ({"max_iterations": 7}, 422), ({"budget_usd": 2.0}, 422), ({"toolkits": ["github"]}, 422), ({"version": 2}, 404),
    ]
    for body, code in refusals:
        refused = await api.call("POST", "/tasks/dispatch", user, json={"goal": "x", "agent": name, **body})
        assert refused.status_code == code, (body, refused.text)
    assert (await api.call("POST", "/tasks/dispatch", user, json={"goal": "x", "version": 1})).status_code == 422

    dispatched = await api.call("POST", "/tasks/dispatch", user, json={"goal": "take notes", "agent": name,
                                                                       "max_iterations": 4})
    assert dispatched.status_code == 202, dispatched.text
    task_id = dispatched.json()["task_id"]
    waiting = await _status(api, user, task_id, "waiting")
    assert waiting["agent"] == {"name": name, "version": 1, "shared": False}
    assert [c["name"] for c in waiting["pending_approval"]["calls"]] == ["NOTES_APPEND"]
    assert waiting["pending_approval"]["timeout_seconds"] == 600
    assert stack.composio.execution_count() == 0

    v2 = await api.call("PATCH", f"/agents/{name}", user, json={
        "system_prompt": "You keep notes (v2).", "tool_policy": {"permissions": {"NOTES_APPEND": "deny"}},
    })
    assert v2.status_code == 200 and v2.json()["latest_version"] == 2

    assert (await api.call("POST", f"/tasks/{task_id}/approve", user)).status_code == 202
    await eventually(lambda: _executed(stack, 1))
    again = await _status(api, user, task_id, "waiting")  # v1 still: turn 1 asks again
    assert again["pending_approval"]["turn"] == waiting["pending_approval"]["turn"] + 1
    assert (await api.call("POST", f"/tasks/{task_id}/approve", user)).status_code == 202
    final = await _status(api, user, task_id, "completed")
    assert final["agent"] == {"name": name, "version": 1, "shared": False}
    assert stack.composio.execution_count() == 2
    run_requests = [r.body or {} for r in stack.llm.requests if "take notes" in str((r.body or {}).get("messages"))]
    assert run_requests and all("(v1)" in str(b.get("system")) for b in run_requests)

    # Unpinned: the latest (v2), whose policy denies the call: the model is told, nothing runs.
    latest = await api.call("POST", "/tasks/dispatch", user, json={"goal": "more notes", "agent": name})
    latest_id = latest.json()["task_id"]
    done = await _status(api, user, latest_id, "completed")
    assert done["agent"]["version"] == 2
    assert stack.composio.execution_count() == 2
    assert done["steps"][1]["name"] == "NOTES_APPEND" and done["steps"][1]["ok"] is False
    denied_turn = [r.body or {} for r in stack.llm.requests if "more notes" in str((r.body or {}).get("messages"))]
    assert "(v2)" in str(denied_turn[-1].get("system"))
    assert "tool policy does not allow NOTES_APPEND" in str(denied_turn[-1]["messages"])

    # Pinned to v1: asks again.
    pinned = await api.call("POST", "/tasks/dispatch", user, json={"goal": "old notes", "agent": name, "version": 1})
    pinned_id = pinned.json()["task_id"]
    assert (await _status(api, user, pinned_id, "waiting"))["agent"]["version"] == 1
    assert (await api.call("DELETE", f"/tasks/{pinned_id}", user)).status_code == 202
    listed = await api.call("GET", "/tasks", user)
    by_id = {t["task_id"]: t for t in listed.json()["tasks"]}
    assert by_id[latest_id]["agent"] == {"name": name, "version": 2, "shared": False}


async def _executed(stack: Any, count: int) -> None:
    assert stack.composio.execution_count() >= count


async def test_declared_agents_are_shared_and_read_only(api: Api, scheduler: Scheduler) -> None:
    store = AgentStore(scheduler.client, scheduler_task_queue=scheduler.settings.scheduler_task_queue)
    name = unique("shared")
    synced = await store.sync_declared("test-yaml", {name: AgentSpec(description="for everyone")})
    assert synced.versions == {name: 1}
    same = await store.sync_declared("test-yaml", {name: AgentSpec(description="for everyone")})
    assert same.versions == {name: 1}  # unchanged: no new version
    changed = await store.sync_declared("test-yaml", {name: AgentSpec(description="for everyone, v2")})
    assert changed.versions == {name: 2}
    other_source = await store.sync_declared("other-yaml", {name: AgentSpec()})
    assert other_source.conflicts == {name: "test-yaml"}

    for user in (scheduler.user, unique("someone")):
        shown = await api.call("GET", f"/agents/{name}", user)
        assert shown.status_code == 200 and shown.json()["shared"] is True and shown.json()["latest_version"] == 2
    for method, body in [("PATCH", {"description": "mine now"}), ("DELETE", None)]:
        refused = await api.call(method, f"/agents/{name}", scheduler.user, json=body)
        assert refused.status_code == 409 and refused.json()["error"] == "agent_read_only", refused.text
        assert "read-only" in refused.json()["detail"]

    scheduler.stack.llm.responder = lambda body, i: replies.text("done")
    run = await api.call("POST", "/tasks/dispatch", scheduler.user, json={"goal": "hello", "agent": name})
    assert run.status_code == 202, run.text
    done = await _status(api, scheduler.user, run.json()["task_id"], "completed")
    assert done["agent"] == {"name": name, "version": 2, "shared": True}

    # Gone from the source: deleted (no new runs).
    emptied = await store.sync_declared("test-yaml", {})
    assert emptied.deleted == [name]
    assert (await api.call("GET", f"/agents/{name}", scheduler.user)).status_code == 404
    assert name not in [a.name for a in await store.list_owned(SHARED_OWNER)]


async def test_a_schedule_runs_its_agents_latest_version_at_each_fire(scheduler: Scheduler) -> None:
    store = AgentStore(scheduler.client, scheduler_task_queue=scheduler.settings.scheduler_task_queue)
    scheduler.stack.llm.responder = lambda body, i: replies.text("done")
    name = unique("digest")
    await store.put(scheduler.user, PutAgent(name=name, spec=AgentSpec(system_prompt="digest (v1)"), mode="create"))
    view = await scheduler.create(definition(concurrency_policy="Allow",
                                             run={"goal": "digest", "agent_ref": {"name": name}}))

    def finished(count: int) -> Callable[[list[FireRecord]], bool]:
        return lambda records: sum(1 for r in records if r.outcome is not None or r.reason) >= count

    await scheduler.store.trigger(view)
    [first] = await scheduler.wait_for_history(view, finished(1))
    assert first.agent == AgentRef(name=name, version=1) and first.run_status is RunStatus.COMPLETED

    await store.put(scheduler.user, PutAgent(name=name, spec=AgentSpec(system_prompt="digest (v2)"), mode="update"))
    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(view, finished(2))
    assert sorted(r.agent.version or 0 for r in records if r.agent) == [1, 2]
    systems = [str((r.body or {}).get("system")) for r in scheduler.stack.llm.requests]
    assert any("digest (v1)" in s for s in systems) and any("digest (v2)" in s for s in systems)

    # The agent goes: the next fire records why and starts nothing (and the schedule lives on).
    await store.delete(scheduler.user, name)
    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(view, finished(3))
    failed = [r for r in records if r.dispatch is DispatchStatus.FAILED]
    assert len(failed) == 1 and failed[0].reason == "agent_not_found" and failed[0].task_id is None
    assert (await scheduler.store.get(view.schedule_id)).definition.run.agent_ref == AgentRef(name=name)

    if os.environ.get("KRON_RECORD_HISTORY"):  # see tests/integration/replay_test.py
        ran = next(r for r in records if r.agent and r.agent.version == 2)
        HISTORIES.mkdir(exist_ok=True)
        for fire_id, file in [(ran.fire_id, "scheduled_fire_agent_ref"),
                              (failed[0].fire_id, "scheduled_fire_agent_not_found")]:
            history = await scheduler.client.get_workflow_handle(fire_id).fetch_history()
            (HISTORIES / f"{file}.json").write_text(history.to_json())


async def test_agents_declared_in_the_yaml_file_sync_into_the_shared_registry(
    api: Api, scheduler: Scheduler, tmp_path: Path
) -> None:
    store = AgentStore(scheduler.client, scheduler_task_queue=scheduler.settings.scheduler_task_queue)
    path = tmp_path / "kron.yaml"
    source = YamlAgentSource(path, source_id="yaml-test")
    sync = AgentSync(store, source)
    name = unique("triage")

    def write(spec: str) -> None:
        path.write_text(f"apiVersion: kron.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\nspec: {spec}\n")

    write("{description: first, toolPolicy: {permissions: {GMAIL_SEND_EMAIL: ask}}}")
    assert await sync.reconcile()
    shown = (await api.call("GET", f"/agents/{name}", unique("anyone"))).json()
    assert shown["shared"] and shown["latest_version"] == 1 and shown["source"] == "yaml-test"
    assert shown["spec"]["tool_policy"]["permissions"] == {"GMAIL_SEND_EMAIL": "ask"}
    assert source.statuses()[name]["latestVersion"] == 1
    assert source.statuses()[name]["conditions"][0]["status"] == "True"

    write("{description: second}")
    assert await sync.reconcile()
    assert (await api.call("GET", f"/agents/{name}", scheduler.user)).json()["latest_version"] == 2

    write("{limits: {maxIterations: ten}}")  # invalid: keeps its last good version, says why
    assert await sync.reconcile()
    assert (await api.call("GET", f"/agents/{name}", scheduler.user)).json()["latest_version"] == 2
    condition = source.statuses()[name]["conditions"][0]
    assert condition["status"] == "False" and condition["reason"] == "Invalid"
    assert "max_iterations" in condition["message"] and source.statuses()[name]["latestVersion"] == 2

    path.write_text("")  # removed from the source: deleted
    assert await sync.reconcile()
    assert (await api.call("GET", f"/agents/{name}", scheduler.user)).status_code == 404
    path.unlink()  # unreadable: nothing changes
    assert not await sync.reconcile()


async def test_an_agents_mcp_servers_follow_the_ssrf_rule_and_run_as_defined(
    api: Api, scheduler: Scheduler, mcp_server: McpTestServer
) -> None:
    user, mine, shared = scheduler.user, unique("mine"), unique("shared-mcp")
    tools = {"name": "tools", "url": mcp_server.url}
    # A user's own agent may name only MCP URLs on the operator's allow-list (none here), as a
    # dispatch may: made or changed, it is refused.
    refused = await api.call("POST", "/agents", user, json={"name": mine, "mcp_servers": [tools]})
    assert refused.status_code == 422 and "mcp_server_not_allowed" in refused.text, refused.text
    assert (await api.call("POST", "/agents", user, json={"name": mine})).status_code == 201
    patched = await api.call("PATCH", f"/agents/{mine}", user, json={"mcp_servers": [tools]})
    assert patched.status_code == 422 and "mcp_server_not_allowed" in patched.text, patched.text

    # An operator's agent may name any URL; its servers are part of its version, so a dispatch of
    # it cannot add others.
    store = AgentStore(scheduler.client, scheduler_task_queue=scheduler.settings.scheduler_task_queue)
    await store.sync_declared("test-yaml", {shared: AgentSpec(mcp_servers=[McpServer.model_validate(tools)])})
    extra = await api.call("POST", "/tasks/dispatch", user,
                           json={"goal": "look it up", "agent": shared, "mcp_servers": [tools]})
    assert extra.status_code == 422 and "mcp_servers" in extra.text, extra.text

    scheduler.stack.llm.responder = lambda body, i: (
        replies.tool_use([("mcp__tools__lookup", {"key": "k"})]) if replies.turn_of(body) == 0 else replies.text("done")
    )
    run = await api.call("POST", "/tasks/dispatch", user, json={"goal": "look it up", "agent": shared})
    assert run.status_code == 202, run.text
    done = await _status(api, user, run.json()["task_id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert mcp_server.call_count("lookup") == 1
