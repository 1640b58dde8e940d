"""The /schedules routes on the real gateway app (auth, errors, preflight) with the scheduler worker
of the `scheduler` fixture: create, list own only, read, update, suspend/resume, trigger, run history,
delete; 422s that say what is wrong; declarative schedules read-only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from kron.common.schedules import ScheduleStore
from kron.contracts.schedules import ScheduleDefinition
from kron.gateway.app import create_app
from kron.gateway.settings import GatewaySettings
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY
from .conftest import Scheduler, delete_schedules_on, unique

JWT_SECRET = "scheduler-test-jwt-secret-0123456789abcdef"


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient

    async def headers(self, user: str) -> dict[str, str]:
        response = await self.http.post("/auth/token", json={"user_id": user})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def call(self, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, headers=await self.headers(user), **kwargs)


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
    )
    app = create_app(
        settings,
        temporal_client=scheduler.client,
        schedule_settings=scheduler.settings.model_copy(update={"schedule_min_interval_seconds": 120}),
    )
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:
        yield Api(app, http)


def body(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "timing": {"cron": ["0 8 * * 1-5"], "timezone": "Europe/Paris"},
            "run": {"goal": "Summarise my unread GitHub notifications"}, **fields}


async def test_schedule_lifecycle_through_the_api(api: Api, scheduler: Scheduler) -> None:
    user, other, name = scheduler.user, unique("other"), unique("digest")
    created = await api.call("POST", "/schedules", user, json=body(name, concurrency_policy="Allow"))
    assert created.status_code == 201, created.text
    detail = created.json()
    assert created.headers["location"] == f"/schedules/{name}"
    assert detail["source"] == "api" and detail["suspend"] is False and len(detail["next_run_times"]) == 5
    assert detail["timing"]["cron"] == ["0 8 * * 1-5"] and detail["concurrency_policy"] == "Allow"
    again = await api.call("POST", "/schedules", user, json=body(name))
    assert again.status_code == 409 and again.json()["error"] == "schedule_exists"

    # Own only.
    async def listed(who: str) -> list[str]:
        response = await api.call("GET", "/schedules", who)
        assert response.status_code == 200, response.text
        return [s["name"] for s in response.json()["schedules"]]

    assert await listed(user) == [name]
    assert await listed(other) == []
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/trigger"), ("GET", "/runs")]:
        response = await api.call(method, f"/schedules/{name}{path}", other, json={} if method == "PATCH" else None)
        assert response.status_code == 404 and response.json()["error"] == "not_found", (method, path)

    patched = await api.call("PATCH", f"/schedules/{name}", user,
                             json={"timing": {"cron": ["15 9 * * *"]}, "max_run_history": 3})
    assert patched.status_code == 200, patched.text
    assert patched.json()["timing"] == {**detail["timing"], "cron": ["15 9 * * *"]}
    assert patched.json()["max_run_history"] == 3

    suspended = await api.call("POST", f"/schedules/{name}/suspend", user)
    assert suspended.json()["suspend"] is True and suspended.json()["next_run_times"] == []
    triggered = await api.call("POST", f"/schedules/{name}/trigger", user)
    assert triggered.status_code == 202 and triggered.json()["fire_id"]

    async def runs() -> list[dict[str, Any]]:
        response = await api.call("GET", f"/schedules/{name}/runs", user)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["runs"]
        return found

    for _ in range(100):
        history = await runs()
        if history and history[0].get("outcome"):
            break
        await asyncio.sleep(0.1)
    assert history[0]["dispatch"] == "started" and history[0]["outcome"] == "succeeded"
    assert history[0]["trigger"] == "manual" and history[0]["usage"]["input_tokens"] == 11
    task = history[0]["task_id"]
    assert task and (await scheduler.client.get_workflow_handle(task).describe()).status is not None

    resumed = await api.call("POST", f"/schedules/{name}/resume", user)
    assert resumed.json()["suspend"] is False and resumed.json()["next_run_times"]

    deleted = await api.call("DELETE", f"/schedules/{name}", user)
    assert deleted.status_code == 204
    assert (await api.call("GET", f"/schedules/{name}", user)).status_code == 404


@pytest.mark.parametrize(
    ("timing", "loc", "says"),
    [
        ({"cron": ["0 25 * * *"]}, "body.timing", "hour: 25 is out of range 0-23"),
        ({"cron": ["0 8 * *"]}, "body.timing", "expected 5 fields"),
        ({"cron": ["0 8 * * *"], "timezone": "Mars/Olympus_Mons"}, "body.timing", "unknown timezone 'Mars/Olympus_Mons'"),
        ({"interval_seconds": 90}, "body.timing.interval_seconds", "fires every 90 s at the shortest; the minimum is 120 s"),
        ({"cron": ["* * * * *"]}, "body.timing.cron", "fires every 60 s at the shortest; the minimum is 120 s"),
        ({"cron": ["0,59 * * * *"]}, "body.timing.cron", "fires every 60 s"),  # 10:59 then 11:00
        ({"cron": ["*/2 * * * *", "@hourly"]}, None, None),  # every 2 minutes: exactly the minimum
        ({"cron": ["*/1 * * * *"], "interval_seconds": 60}, "body.timing", "exactly one"),
    ],
)
async def test_invalid_timing_is_a_422_that_says_what_is_wrong(
    api: Api, scheduler: Scheduler, timing: dict[str, Any], loc: str | None, says: str | None
) -> None:
    response = await api.call("POST", "/schedules", scheduler.user, json=body(unique("bad"), timing=timing))
    if says is None:
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "validation_error" and says in error["detail"], error
    assert any(".".join(e["loc"]).startswith(loc or "") for e in error["errors"])


async def test_a_callback_url_on_a_private_network_is_a_422(api: Api, scheduler: Scheduler) -> None:
    # The other spellings of loopback are refused like the dispatch refuses them (one validator).
    spellings = ("http://0x7f000001/", "http://2130706433/", "http://0177.0.0.1/", "http://127.1/", "http://0/",
                 "http://\u24dbocalhost/")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://localhost:8080/", "not a url", *spellings):
        response = await api.call("POST", "/schedules", scheduler.user,
                                  json=body(unique("hook"), run={"goal": "triage", "callback_url": url}))
        assert response.status_code == 422, response.text
        assert [(e["loc"], e["type"]) for e in response.json()["errors"]] == [
            (["body", "run", "callback_url"], "callback_url_not_allowed")]


async def test_creating_for_an_unconnected_toolkit_is_a_409_with_the_link(api: Api, scheduler: Scheduler) -> None:
    response = await api.call("POST", "/schedules", scheduler.user,
                              json=body(unique("digest"), run={"goal": "triage", "toolkits": ["GitHub"]}))
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "toolkit_not_connected" and response.json()["toolkit"] == "github"
    assert response.json()["connect_url"].startswith("http")


async def test_declarative_schedules_are_read_only_here(api: Api, scheduler: Scheduler) -> None:
    name = unique("digest")
    definition = ScheduleDefinition.model_validate(body(name))
    await scheduler.store.create(scheduler.user, definition, source="kubernetes")
    assert (await api.call("GET", f"/schedules/{name}", scheduler.user)).json()["source"] == "kubernetes"
    for method, path in [("PATCH", ""), ("DELETE", ""), ("POST", "/suspend"), ("POST", "/resume")]:
        response = await api.call(method, f"/schedules/{name}{path}", scheduler.user,
                                  json={"suspend": True} if method == "PATCH" else None)
        assert response.status_code == 409, (method, response.text)
        assert response.json()["error"] == "schedule_managed_declaratively"
    assert (await api.call("POST", f"/schedules/{name}/trigger", scheduler.user)).status_code == 202


async def test_run_history_without_a_scheduler_worker_is_a_503(api: Api, scheduler: Scheduler) -> None:
    name = unique("orphan")
    settings = scheduler.settings.model_copy(update={"scheduler_task_queue": unique("nobody-polls")})
    store = ScheduleStore(scheduler.client, settings, rpc_timeout=timedelta(seconds=1))
    api.app.state.gateway.schedules = store
    await store.create(scheduler.user, ScheduleDefinition.model_validate(body(name)))
    try:
        response = await api.call("GET", f"/schedules/{name}/runs", scheduler.user)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "scheduler_unavailable" and response.headers["retry-after"] == "2"
        assert (await api.call("GET", f"/schedules/{name}", scheduler.user)).status_code == 200
    finally:
        await delete_schedules_on(scheduler.client, settings.scheduler_task_queue)


OUT_OF_UTC_RANGE = ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59")


@pytest.mark.parametrize("field", ["start_at", "end_at"])
@pytest.mark.parametrize("when", OUT_OF_UTC_RANGE)
async def test_times_utc_cannot_hold_are_a_422_and_change_nothing(
    api: Api, scheduler: Scheduler, field: str, when: str
) -> None:
    user, name = scheduler.user, unique("edge")
    timing = {"cron": ["0 8 * * 1-5"], field: when}
    created = await api.call("POST", "/schedules", user, json=body(name, timing=timing))
    assert created.status_code == 422, created.text
    assert created.json()["error"] == "validation_error" and "out of range" in created.json()["detail"]
    assert (await api.call("GET", f"/schedules/{name}", user)).status_code == 404

    assert (await api.call("POST", "/schedules", user, json=body(name))).status_code == 201
    before = (await api.call("GET", f"/schedules/{name}", user)).json()
    patched = await api.call("PATCH", f"/schedules/{name}", user, json={"timing": {field: when}})
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"] == "validation_error" and "out of range" in patched.json()["detail"]
    assert (await api.call("GET", f"/schedules/{name}", user)).json()["timing"] == before["timing"]


@pytest.mark.parametrize(
    "fields",
    [
        {"max_run_history": "10"},
        {"max_run_history": True},
        {"suspend": "true"},
        {"timing": {"interval_seconds": "3600"}},
        {"run": {"goal": "triage", "token_budget": True}},
        {"run": {"goal": "triage", "max_iterations": "5"}},
    ],
)
async def test_numbers_and_booleans_are_not_coerced(api: Api, scheduler: Scheduler, fields: dict[str, Any]) -> None:
    name = unique("strict")
    created = await api.call("POST", "/schedules", scheduler.user, json=body(name, **fields))
    assert created.status_code == 422, created.text
    assert (await api.call("GET", f"/schedules/{name}", scheduler.user)).status_code == 404
    assert (await api.call("POST", "/schedules", scheduler.user, json=body(name))).status_code == 201
    patched = await api.call("PATCH", f"/schedules/{name}", scheduler.user, json=fields)
    assert patched.status_code == 422, patched.text


async def test_a_callback_url_is_stored_as_it_will_be_reached(api: Api, scheduler: Scheduler) -> None:
    run = {"goal": "triage", "callback_url": "http://0x5db8d822:8080/Hook"}
    created = await api.call("POST", "/schedules", scheduler.user, json=body(unique("hook"), run=run))
    assert created.status_code == 201, created.text
    assert created.json()["run"]["callback_url"] == "http://93.184.216.34:8080/Hook"
