from __future__ import annotations

import pytest

from kron.common.agent_runs import quote_literal
from kron.contracts.models import AgentRunInput
from kron.gateway.cursors import CursorCodec
from kron.gateway.runs import idempotent_task_id, request_fingerprint, visibility_query
from kron.gateway.schemas import ExecutionState


def test_visibility_query_filters_by_owner_type_and_state() -> None:
    assert visibility_query("bob") == (
        "KronUserId = 'bob' AND WorkflowType = 'AgentWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"
    )
    assert visibility_query("bob", ExecutionState.CANCELLED).endswith("AND ExecutionStatus = 'Canceled'")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("bob", "'bob'"), ("o'brien", "'o\\'brien'"), ("a\\", "'a\\\\'"), ("x' OR 1=1 --", "'x\\' OR 1=1 --'")],
)
def test_literals_are_quoted_and_escaped(value: str, quoted: str) -> None:
    assert quote_literal(value) == quoted


def test_idempotent_ids_depend_on_user_and_key_unambiguously() -> None:
    assert idempotent_task_id("bob", "k") == idempotent_task_id("bob", "k")
    assert idempotent_task_id("bob", "k") != idempotent_task_id("bob-x", "k")
    assert idempotent_task_id("a", "b:c") != idempotent_task_id("a:b", "c")


def test_fingerprint_ignores_who_and_when_but_not_what() -> None:
    first = AgentRunInput(user_id="bob", goal="g", request_id="r1")
    assert request_fingerprint(first) == request_fingerprint(first.model_copy(update={"request_id": "r2"}))
    assert request_fingerprint(first) != request_fingerprint(first.model_copy(update={"goal": "h"}))


def test_cursor_round_trip_and_binding() -> None:
    codec = CursorCodec(b"secret")
    cursor = codec.encode(b'{"RunID":"x"}', "bob\0")
    assert codec.decode(cursor, "bob\0") == b'{"RunID":"x"}'
    assert codec.decode(cursor, "bob-x\0") is None  # another user's listing
    assert codec.decode(cursor, "bob\0running") is None  # another filter
    assert CursorCodec(b"other secret").decode(cursor, "bob\0") is None
    for garbage in ["", ".", "abc", "abc.def", "!!!.???", cursor + "x", cursor.replace(".", "")]:
        assert codec.decode(garbage, "bob\0") is None
