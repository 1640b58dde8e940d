"""The CLI's fixed choices that mirror a deployable's schema it may not import."""

from __future__ import annotations

from kron.cli.main import EXECUTION_STATES
from kron.gateway.schemas import ExecutionState


def test_tasks_status_choices_are_the_gateways_execution_states() -> None:
    assert EXECUTION_STATES == tuple(state.value for state in ExecutionState)
