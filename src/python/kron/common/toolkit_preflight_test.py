from __future__ import annotations

import pytest

from kron.common.toolkit_preflight import (
    ConnectionCheck,
    NotConnected,
    ToolkitRejected,
    check_connections,
    rejects_toolkit,
)


class Refused(Exception):
    def __init__(self, status_code: object) -> None:
        super().__init__(f"refused with {status_code}")
        self.status_code = status_code


class Connections:
    """Answers from memory; `fail_with` is raised by the calls named in `failing`."""

    def __init__(self, connected: set[str], fail_with: Exception | None = None, failing: str = "") -> None:
        self.connected = connected
        self.fail_with = fail_with
        self.failing = failing
        self.asked: list[str] = []

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        self.asked.append(toolkit)
        if self.fail_with is not None and "is_connected" in self.failing:
            raise self.fail_with
        return toolkit in self.connected

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        if self.fail_with is not None and "connect_link" in self.failing:
            raise self.fail_with
        return f"https://connect.example/{toolkit}?user={user_id}&back={callback_url}"


@pytest.mark.parametrize(
    ("status", "rejects"),
    [(400, True), (404, True), (422, True), (401, False), (403, False), (408, False), (429, False),
     (500, False), (503, False), ("404", False), (None, False)],
)
def test_only_client_errors_about_the_toolkit_reject_it(status: object, rejects: bool) -> None:
    assert rejects_toolkit(Refused(status)) is rejects
    assert rejects_toolkit(ConnectionError("down")) is False


async def test_every_toolkit_is_asked_and_the_first_missing_gets_a_link() -> None:
    connections = Connections({"gmail"})
    check = await check_connections(connections, "bob", ["gmail", "github", "slack"], callback_url="https://back")
    assert sorted(connections.asked) == ["github", "gmail", "slack"]
    assert check == ConnectionCheck(
        missing=["github", "slack"],
        first=NotConnected("github", "https://connect.example/github?user=bob&back=https://back"),
    )
    assert await check_connections(connections, "bob", ["gmail"], callback_url=None) == ConnectionCheck()


async def test_a_refused_toolkit_is_rejected_and_other_errors_propagate() -> None:
    with pytest.raises(ToolkitRejected) as rejected:
        await check_connections(Connections(set(), Refused(404), "connect_link"), "bob", ["nosuch"], callback_url=None)
    assert rejected.value.toolkit == "nosuch"
    with pytest.raises(ToolkitRejected) as rejected:
        await check_connections(Connections(set(), Refused(400), "is_connected"), "bob", ["a", "b"], callback_url=None)
    assert rejected.value.toolkit == "a"
    with pytest.raises(Refused):  # our key: not the toolkit's fault
        await check_connections(Connections(set(), Refused(401), "is_connected"), "bob", ["a"], callback_url=None)
    with pytest.raises(ConnectionError):
        await check_connections(Connections(set(), ConnectionError(), "connect_link"), "bob", ["a"], callback_url=None)
