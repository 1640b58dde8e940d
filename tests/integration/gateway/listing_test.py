"""Listing and reading tasks: each user sees only their own, through Temporal visibility."""

from __future__ import annotations

import uuid

from kron_testing import fake_anthropic as replies

from ..conftest import Stack
from .conftest import Gateway, eventually, unique_user


async def test_users_see_only_their_own_tasks_even_with_prefix_ids(gateway: Gateway) -> None:
    bob = f"bob{uuid.uuid4().hex[:6]}"
    bob_x = f"{bob}-x"  # bob's id is a prefix of this one: ownership must not be a prefix match
    bobs = [(await gateway.dispatch(bob)).json()["task_id"] for _ in range(2)]
    bob_xs = [(await gateway.dispatch(bob_x)).json()["task_id"] for _ in range(3)]

    async def listings() -> tuple[list[str], list[str]]:
        seen = await gateway.list_ids(bob), await gateway.list_ids(bob_x)
        assert (len(seen[0]), len(seen[1])) == (2, 3)
        return seen

    bob_sees, bob_x_sees = await eventually(listings)
    assert bob_sees == bobs[::-1]  # newest first
    assert sorted(bob_x_sees) == sorted(bob_xs)
    # Another user's task reads as "no such task", for every route.
    headers = await gateway.headers(bob)
    for method, path in [("GET", ""), ("GET", "/events"), ("DELETE", "")]:
        response = await gateway.http.request(method, f"/tasks/{bob_xs[0]}{path}", headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "not_found"
    missing = await gateway.http.get("/tasks/run-doesnotexist", headers=headers)
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "detail": "No such task"}


async def test_pagination_walks_every_task_once(gateway: Gateway) -> None:
    user = unique_user()
    dispatched = [(await gateway.dispatch(user)).json()["task_id"] for _ in range(5)]
    await eventually(lambda: _count_is(gateway, user, 5))
    headers = await gateway.headers(user)

    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await gateway.http.get("/tasks", params=params, headers=headers)).json()
        pages += 1
        seen += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == dispatched[::-1]
    assert pages in (3, 4)  # the last full page may hand out a cursor to an empty one


async def test_cursors_are_bound_to_the_user_and_filter(gateway: Gateway) -> None:
    user, other = unique_user(), unique_user()
    for _ in range(3):
        await gateway.dispatch(user)
    await eventually(lambda: _count_is(gateway, user, 3))
    page = (await gateway.http.get("/tasks", params={"limit": 1}, headers=await gateway.headers(user))).json()
    cursor = page["next_cursor"]
    assert cursor

    for headers, params in [
        (await gateway.headers(other), {"cursor": cursor}),  # someone else's cursor
        (await gateway.headers(user), {"cursor": cursor, "status": "completed"}),  # another filter
        (await gateway.headers(user), {"cursor": cursor[:-2] + "AA"}),  # tampered
        (await gateway.headers(user), {"cursor": "not-a-cursor"}),
    ]:
        response = await gateway.http.get("/tasks", params=params, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_cursor"


async def test_status_filter(gateway: Gateway, running_stack: Stack) -> None:
    user = unique_user()
    # Goals that mention "slow" hang in their model call, so those runs stay open.
    def respond(body: dict[str, object], call_index: int) -> replies.Reply:
        if "slow" in str(body.get("messages")):
            return replies.delay(30, replies.text("late"))
        return replies.text("quick")

    running_stack.llm.responder = respond
    quick = (await gateway.dispatch(user, goal="quick one")).json()["task_id"]
    slow = (await gateway.dispatch(user, goal="slow one")).json()["task_id"]
    await gateway.wait_until_terminal(user, quick)

    async def filtered() -> None:
        assert await gateway.list_ids(user, status="completed") == [quick]
        assert await gateway.list_ids(user, status="running") == [slow]
        assert await gateway.list_ids(user, status="cancelled") == []

    await eventually(filtered)
    bad = await gateway.http.get("/tasks", params={"status": "bogus"}, headers=await gateway.headers(user))
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    listed = (await gateway.http.get("/tasks", headers=await gateway.headers(user))).json()["tasks"]
    assert [t["task_id"] for t in listed] == [slow, quick]  # open first, then finished
    assert listed[0]["goal"] == "slow one" and listed[0]["execution_status"] == "running"


async def _count_is(gateway: Gateway, user: str, count: int) -> None:
    assert len(await gateway.list_ids(user, limit=100)) == count
