from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml

from kron.common.schedules import ScheduleView
from kron.contracts.models import RunStatus, Usage
from kron.contracts.schedules import (
    DispatchStatus,
    FireOutcome,
    FireRecord,
    RunHistory,
    RunTemplate,
    ScheduledFireInput,
    ScheduleTiming,
)
from kron.scheduler.resources import (
    STATUS_KEYS,
    declared_from_resource,
    expand_documents,
    render_status,
)

REPO = Path(__file__).resolve().parents[4]
CRD = REPO / "deploy/k8s/base/crds/scheduledrun.yaml"
EXAMPLE = REPO / "deploy/k8s/examples/scheduledrun-github-digest.yaml"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def resource(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user": "alice",
        "timing": {"cron": ["0 8 * * 1-5"], "timezone": "Europe/Paris"},
        "run": {"goal": "digest"},
    }
    base.update(spec)
    return {"apiVersion": "kron.dev/v1alpha1", "kind": "ScheduledRun",
            "metadata": {"name": "digest", "namespace": "team-a", "generation": 2}, "spec": base}


def test_the_example_parses_into_definitions() -> None:
    digest, triage = (declared_from_resource(r) for r in expand_documents(yaml.safe_load_all(EXAMPLE.read_text())))
    assert digest.error is None and digest.definition is not None
    assert digest.ref.key == "team-a/github-digest" and digest.owner == "alice"
    assert digest.definition.timing.jitter_seconds == 60 and digest.definition.run.timeout_seconds == 1800
    assert digest.definition.run.toolkits == ["github", "slack"]
    assert triage.definition is not None and triage.definition.suspend
    assert triage.definition.run.approval is not None
    assert triage.definition.run.approval.require_for == ["GMAIL_SEND_EMAIL"]
    assert triage.definition.concurrency_policy.value == "Replace"


def test_lists_are_flattened_and_other_kinds_left_out() -> None:
    documents = [None, {"kind": "ConfigMap"}, {"kind": "List", "items": [resource(), {"kind": "Secret"}]}]
    assert [r["metadata"]["name"] for r in expand_documents(documents)] == ["digest"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"user": None}, "spec.user: required"),
        ({"timing": {"cron": ["0 8 * *"]}}, "expected 5 fields"),
        ({"timing": {"intervalSeconds": 60, "cron": ["* * * * *"]}}, "exactly one"),
        ({"concurrencyPolicy": "Sometimes"}, "spec.concurrency_policy"),
        ({"run": {"goal": "x", "unknownField": 1}}, "spec.run.unknown_field: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_say_what_is_wrong(change: dict[str, Any], says: str) -> None:
    declared = declared_from_resource(resource(**change))
    assert declared.definition is None and declared.error is not None and says in declared.error


def test_names_and_api_versions_are_checked() -> None:
    bad_name = resource()
    bad_name["metadata"]["name"] = "Digest_1"
    assert "DNS label" in (declared_from_resource(bad_name).error or "")
    old = resource()
    old["apiVersion"] = "kron.dev/v1"
    assert "apiVersion must be kron.dev/v1alpha1" in (declared_from_resource(old).error or "")


def view_of(declared_definition: Any) -> ScheduleView:
    fire_input = ScheduledFireInput(schedule_id="kron-sched-digest-1", owner="alice", definition=declared_definition,
                                    agent_task_queue="kron-agent", scheduler_task_queue="kron-scheduler")
    return ScheduleView(schedule_id="kron-sched-digest-1", owner="alice", source="kubernetes",
                        definition=declared_definition, next_run_times=[NOW + timedelta(hours=20)],
                        fire_input=fire_input)


def test_status_renders_history_active_runs_and_keeps_transition_times() -> None:
    declared = declared_from_resource(resource())
    assert declared.definition is not None
    done = FireRecord(fire_id="f1", scheduled_at=NOW - timedelta(days=1), fired_at=NOW - timedelta(days=1),
                      dispatch=DispatchStatus.STARTED, task_id="run-1", outcome=FireOutcome.SUCCEEDED,
                      run_status=RunStatus.COMPLETED, ended_at=NOW - timedelta(hours=23),
                      usage=Usage(input_tokens=5, output_tokens=3, model_calls=1))
    running = FireRecord(fire_id="f2", scheduled_at=NOW, fired_at=NOW, dispatch=DispatchStatus.STARTED, task_id="run-2")
    history = RunHistory(records=[running, done], max_run_history=10)

    status = render_status(declared, ready=True, reason="Synced", message="ok", now=NOW,
                           view=view_of(declared.definition), history=history)
    assert status["observedGeneration"] == 2 and status["scheduleId"] == "kron-sched-digest-1"
    assert status["nextRunTime"] == "2026-11-24T08:00:00Z" and status["lastRunTime"] == "2026-11-23T12:00:00Z"
    assert status["active"] == [{"fireId": "f2", "taskId": "run-2", "startTime": "2026-11-23T12:00:00Z"}]
    assert status["runHistory"][1]["usage"] == {"inputTokens": 5, "outputTokens": 3, "modelCalls": 1, "toolCalls": 0}
    assert status["runHistory"][1]["outcome"] == "succeeded" and "outcome" not in status["runHistory"][0]
    assert status["conditions"][0]["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert set(status) <= set(STATUS_KEYS)

    # Later, same condition: the transition time stays; without a fresh history the old one stays.
    declared.status = status
    later = render_status(declared, ready=True, reason="Synced", message="ok", now=NOW + timedelta(hours=1),
                          view=view_of(declared.definition))
    assert later["conditions"] == status["conditions"] and later["runHistory"] == status["runHistory"]
    broken = render_status(declared, ready=False, reason="Invalid", message="bad", now=NOW + timedelta(hours=2))
    assert broken["conditions"][0]["lastTransitionTime"] == "2026-11-23T14:00:00Z"


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_the_example_and_a_rendered_status_validate_against_the_crd() -> None:
    schema = crd_schema()
    for document in yaml.safe_load_all(EXAMPLE.read_text()):
        jsonschema.validate(document, schema)
    declared = declared_from_resource(resource())
    assert declared.definition is not None
    record = FireRecord(fire_id="f", fired_at=NOW, dispatch=DispatchStatus.PREFLIGHT_FAILED, toolkit="github",
                        connect_url="https://connect.composio.dev/x", error="github is not connected")
    status = render_status(declared, ready=True, reason="Synced", message="ok", now=NOW,
                           view=view_of(declared.definition), history=RunHistory(records=[record], max_run_history=5))
    jsonschema.validate({**resource(), "status": status}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(resource(concurrencyPolicy="Sometimes"), schema)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_crd_spec_has_every_api_field() -> None:
    """The CRD and the REST body must not drift apart."""
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert set(spec["timing"]["properties"]) == {camel(f) for f in ScheduleTiming.model_fields}
    assert set(spec["run"]["properties"]) == {camel(f) for f in RunTemplate.model_fields}
    assert {"user", "timing", "run", "suspend", "concurrencyPolicy", "maxRunHistory"} == set(spec)
