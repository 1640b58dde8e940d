"""FakeComposio's own logic, spoken to over plain HTTP; responses must validate as composio_client models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from composio_client.types.auth_config_create_response import AuthConfigCreateResponse
from composio_client.types.auth_config_list_response import AuthConfigListResponse
from composio_client.types.connected_account_list_response import ConnectedAccountListResponse
from composio_client.types.link_create_response import LinkCreateResponse
from composio_client.types.tool_execute_response import ToolExecuteResponse
from composio_client.types.tool_list_response import ToolListResponse
from composio_client.types.tool_retrieve_response import ToolRetrieveResponse

from kron_testing.fake_composio import FakeComposio, ToolFailed

API_KEY = "ck-fake-test-key"


@pytest.fixture
def fake() -> Iterator[FakeComposio]:
    with FakeComposio(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def http(fake: FakeComposio) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{fake.base_url}/api/v3.1", headers={"x-api-key": API_KEY}) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_tool_responses_match_the_client_models(fake: FakeComposio, http: httpx.Client) -> None:
    fake.connect("alice", "github")
    listed = ToolListResponse.model_validate(ok(http.get("/tools", params={"toolkit_slug": "github,gmail"})))
    assert sorted(t.slug for t in listed.items) == ["GITHUB_CREATE_ISSUE", "GMAIL_FETCH_EMAILS"]

    one = ToolRetrieveResponse.model_validate(ok(http.get("/tools/GITHUB_CREATE_ISSUE")))
    assert one.toolkit.slug == "github"

    body = {"user_id": "alice", "arguments": {"owner": "o", "repo": "r", "title": "t"}}
    executed = ToolExecuteResponse.model_validate(
        ok(http.post("/tools/execute/GITHUB_CREATE_ISSUE", json=body))
    )
    assert executed.successful and executed.data["number"] == 1


def test_connection_responses_match_the_client_models(fake: FakeComposio, http: httpx.Client) -> None:
    fake.connect("alice", "github")
    created = AuthConfigCreateResponse.model_validate(
        ok(http.post("/auth_configs", json={"toolkit": {"slug": "gmail"}, "auth_config": {}}))
    )
    configs = AuthConfigListResponse.model_validate(
        ok(http.get("/auth_configs", params={"toolkit_slug": "gmail"}))
    )
    assert [c.id for c in configs.items] == [created.auth_config.id]

    link = LinkCreateResponse.model_validate(
        ok(
            http.post(
                "/connected_accounts/link", json={"user_id": "bob", "auth_config_id": created.auth_config.id}
            )
        )
    )
    assert link.redirect_url.startswith(fake.base_url)

    accounts = ConnectedAccountListResponse.model_validate(ok(http.get("/connected_accounts")))
    assert [(a.user_id, a.toolkit.slug, a.status) for a in accounts.items] == [
        ("alice", "github", "ACTIVE"),
        ("bob", "gmail", "INITIATED"),
    ]


def test_connected_accounts_filters(fake: FakeComposio, http: httpx.Client) -> None:
    fake.connect("alice", "github")
    fake.connect("alice", "gmail")
    fake.connect("bob", "github")
    fake.disconnect("alice", "gmail")

    def users(**params: Any) -> list[tuple[str, str]]:
        items = ok(http.get("/connected_accounts", params=params))["items"]
        return [(a["user_id"], a["toolkit"]["slug"]) for a in items]

    assert users(user_ids="alice", statuses="ACTIVE") == [("alice", "github")]
    assert users(user_ids=["alice", "bob"], toolkit_slugs="github") == [
        ("alice", "github"),
        ("bob", "github"),
    ]
    assert users(user_ids="alice,bob", statuses=["INACTIVE"]) == [("alice", "gmail")]


def test_requires_the_api_key_and_records_every_request(fake: FakeComposio) -> None:
    response = httpx.get(f"{fake.base_url}/api/v3.1/tools", headers={"x-api-key": "nope"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid API key"

    missing = httpx.get(f"{fake.base_url}/api/v3.1/triggers", headers={"x-api-key": API_KEY})
    assert missing.status_code == 404
    assert fake.requests == [("GET", "/api/v3.1/tools"), ("GET", "/api/v3.1/triggers")]


def test_fail_next_applies_to_executions_only_and_counts_down(fake: FakeComposio, http: httpx.Client) -> None:
    fake.add_tool(
        "PING", "demo", "Ping.", {"type": "object", "properties": {}}, lambda u, a: {"pong": u}, no_auth=True
    )
    fake.fail_next(2, status=502)

    assert http.get("/tools").status_code == 200
    statuses = [http.post("/tools/execute/PING", json={"user_id": "u"}).status_code for _ in range(3)]

    assert statuses == [502, 502, 200]
    assert fake.execution_count("PING") == 1


def test_execution_errors(fake: FakeComposio, http: httpx.Client) -> None:
    def fails(user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
        raise ToolFailed("quota exceeded")

    def crashes(user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("handler bug")

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake.add_tool("FAILS", "demo", "Fails.", schema, fails, no_auth=True)
    fake.add_tool("CRASHES", "demo", "Crashes.", schema, crashes, no_auth=True)

    def execute(slug: str, **body: Any) -> tuple[int, Any]:
        response = http.post(f"/tools/execute/{slug}", json=body)
        return response.status_code, response.json()

    status, failed = execute("FAILS", user_id="u", arguments={"n": 1})
    assert (status, failed["successful"], failed["error"]) == (200, False, "quota exceeded")
    assert execute("NOPE", user_id="u")[0] == 404
    assert execute("FAILS", user_id="u", arguments={})[1]["error"]["message"].endswith("argument(s): n")
    assert execute("FAILS", user_id="u", arguments={"n": 1, "m": 2})[1]["error"]["message"].endswith(
        "argument(s): m"
    )
    assert execute("GITHUB_CREATE_ISSUE", user_id="u", arguments={})[0] == 400  # not connected
    assert execute("CRASHES", user_id="u", arguments={"n": 1})[0] == 500
    assert [type(e) for e in fake.errors] == [RuntimeError]
    assert [e.slug for e in fake.executions] == ["FAILS", "CRASHES"]


def test_tool_list_pages(fake: FakeComposio, http: httpx.Client) -> None:
    first = ok(http.get("/tools", params={"limit": 1}))
    second = ok(http.get("/tools", params={"limit": 1, "cursor": first["next_cursor"]}))

    assert [len(first["items"]), len(second["items"])] == [1, 1]
    assert first["items"][0]["slug"] != second["items"][0]["slug"]
    assert second["next_cursor"] is None
    assert ok(http.get("/tools", params={"tool_slugs": "GMAIL_FETCH_EMAILS"}))["total_items"] == 1


def test_restart_keeps_the_port(fake: FakeComposio) -> None:
    url = fake.base_url
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/v3.1/tools", headers={"x-api-key": API_KEY})
    fake.start()
    assert fake.base_url == url
    assert httpx.get(f"{url}/api/v3.1/tools", headers={"x-api-key": API_KEY}).status_code == 200
