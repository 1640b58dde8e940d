"""The app without Temporal: error shapes, request ids, the schema. (Routes that reach Temporal are
tested against a real server in tests/integration/gateway.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from kron.common.logging import configure_logging
from kron.gateway.app import create_app
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token

SETTINGS = GatewaySettings(
    dev_mode=True, temporal_address="127.0.0.1:1", temporal_startup_wait_seconds=0, max_body_bytes=2048
)


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    app = create_app(SETTINGS, connections_factory=None)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("secret internals")

    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('alice', SETTINGS).access_token}"}


async def test_operation_ids_are_stable(app: FastAPI) -> None:
    operations = {
        op["operationId"] for path in app.openapi()["paths"].values() for op in path.values()
    }
    assert operations == {
        "livez", "readyz", "metrics", "issue_token", "dispatch_task", "list_tasks", "get_task",
        "stream_task_events", "cancel_task", "approve_task", "deny_task", "resolve_unknown_outcome",
        "list_task_deliveries",
        "patch_task", "get_usage",
        "create_schedule", "list_schedules", "get_schedule", "update_schedule", "delete_schedule",
        "suspend_schedule", "resume_schedule", "trigger_schedule", "list_schedule_runs",
        "list_agents", "create_agent", "get_agent", "list_agent_versions", "get_agent_version", "update_agent",
        "delete_agent",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("PUT", "/livez", 405, "method_not_allowed"),
        ("GET", "/tasks", 401, "missing_token"),
        ("GET", "/tasks/bad%20id", 401, "missing_token"),  # authentication comes first
    ],
)
async def test_errors_are_json(http: httpx.AsyncClient, method: str, path: str, status: int, error: str) -> None:
    response = await http.request(method, path)
    assert response.status_code == status
    assert response.json()["error"] == error and isinstance(response.json()["detail"], str)


async def test_validation_errors_name_fields_not_values(http: httpx.AsyncClient) -> None:
    response = await http.post("/auth/token", json={"user_id": 12345678, "password": "hunter2"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error" and "body.user_id" in body["detail"]
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "user_id"), ("body", "password")}
    assert "12345678" not in response.text and "hunter2" not in response.text


async def test_declared_oversized_body_is_refused_unread(http: httpx.AsyncClient) -> None:
    response = await http.post("/tasks/dispatch", content=b"x" * 4096, headers=_auth())
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert response.headers["x-request-id"]


async def test_unexpected_errors_are_json_500_without_internals(http: httpx.AsyncClient) -> None:
    response = await http.get("/boom", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "Internal error"}
    assert response.headers["x-request-id"] == "trace-me"


async def test_metrics_labels_stay_bounded(http: httpx.AsyncClient) -> None:
    await http.request("BREW", "/livez")
    await http.get("/tasks/some-task-id")
    body = (await http.get("/metrics")).text
    assert 'method="OTHER"' in body and "some-task-id" not in body
    assert 'route="/tasks/{task_id}"' in body
    assert 'kron_dispatches_total{outcome="rate_limited"} 0.0' in body


async def test_the_500_log_line_carries_the_request_id_the_client_got(
    http: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    given = await http.get("/boom", headers={"X-Request-ID": "trace-me-too"})
    made = await http.get("/boom")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    logged = [line["request_id"] for line in lines if line["event"] == "unhandled error"]
    assert logged == [given.headers["x-request-id"], made.headers["x-request-id"]]
    assert logged[0] == "trace-me-too" and len(logged[1]) == 32
