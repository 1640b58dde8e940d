"""The recovery settings: defaults are the step bundles' own, and a cadence that cannot keep a step
alive within its timeout is refused at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kron.worker.settings import WorkerSettings
from kron.worker.step_options import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT


def test_heartbeat_defaults_are_the_step_options() -> None:
    settings = WorkerSettings()
    assert settings.heartbeat_timeout_seconds == HEARTBEAT_TIMEOUT.total_seconds()
    assert settings.heartbeat_interval_seconds == HEARTBEAT_INTERVAL.total_seconds()


def test_heartbeat_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_HEARTBEAT_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("KRON_HEARTBEAT_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("KRON_STICKY_QUEUE_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("KRON_WORKFLOW_TASK_POLLERS", "8")
    settings = WorkerSettings()
    assert (settings.heartbeat_timeout_seconds, settings.heartbeat_interval_seconds) == (10, 5)
    assert (settings.sticky_queue_timeout_seconds, settings.workflow_task_pollers) == (3, 8)


def test_a_cadence_over_half_the_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="at most half"):
        WorkerSettings(heartbeat_timeout_seconds=2, heartbeat_interval_seconds=1.5)


def test_one_workflow_task_poller_is_refused() -> None:
    # The SDK splits workflow pollers between the sticky and the normal queue: one cannot serve both.
    with pytest.raises(ValidationError):
        WorkerSettings(workflow_task_pollers=1)
