"""The `ScheduledRun` resource (deploy/k8s/base/crds/scheduledrun.yaml): parsing its spec into a
`ScheduleDefinition` and rendering its status. Both declarative sources (Kubernetes, the local YAML
file) speak this shape, so the sync never knows where a definition came from.

    apiVersion: kron.dev/v1alpha1
    kind: ScheduledRun
    metadata: {name: github-digest, namespace: team-a}
    spec:
      user: alice
      timing: {cron: ["0 8 * * 1-5"], timezone: Europe/Paris}
      run: {goal: "Summarise my unread GitHub notifications", toolkits: [github]}
      concurrencyPolicy: Forbid
      maxRunHistory: 10

Spec keys are the REST API's, in camelCase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kron.common.schedules import ScheduleView
from kron.contracts.schedules import NAME_PATTERN, FireRecord, RunHistory, ScheduleDefinition

GROUP = "kron.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScheduledRun"
PLURAL = "scheduledruns"
LIST_KINDS = ("List", f"{KIND}List")
# Status history is bounded here too: a resource must stay well under etcd's object size limit.
MAX_STATUS_HISTORY = 20
STATUS_KEYS = (
    "observedGeneration", "scheduleId", "suspended", "nextRunTime", "lastRunTime", "active", "runHistory",
    "conditions",
)
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class ResourceRef:
    name: str
    namespace: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass
class DeclaredSchedule:
    """One ScheduledRun as a source has it: a definition, or why it is not valid."""

    ref: ResourceRef
    owner: str | None
    definition: ScheduleDefinition | None
    error: str | None = None
    generation: int | None = None
    status: dict[str, Any] = field(default_factory=dict)  # as last written (kept transition times)

    @property
    def name(self) -> str:
        return self.ref.name


# Maps whose keys are data, not field names (an MCP server's HTTP header names): kept as written.
_DATA_KEYED_MAPS = frozenset({"headers"})


def snake_keys(mapping: Mapping[str, Any], *, data_keys: bool = False) -> dict[str, Any]:
    """camelCase keys to snake_case, all the way down (into lists too), except the keys of the
    data-keyed maps (their values are converted)."""
    converted: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key if data_keys else _CAMEL_BOUNDARY.sub("_", key).lower()
        converted[name] = _snake_value(value, data_keys=not data_keys and name in _DATA_KEYED_MAPS)
    return converted


def _snake_value(value: Any, *, data_keys: bool = False) -> Any:
    if isinstance(value, Mapping):
        if data_keys:
            return {k: _snake_value(v) for k, v in value.items()}
        return snake_keys(value)
    if isinstance(value, list):
        return [_snake_value(v) for v in value]
    return value


def expand_documents(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    """ScheduledRun objects from YAML documents or API payloads (`List`s are flattened; other kinds
    and empty documents are left out)."""
    found: list[Mapping[str, Any]] = []
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if document.get("kind") in LIST_KINDS:
            found.extend(expand_documents(document.get("items") or []))
        elif document.get("kind") == KIND:
            found.append(document)
    return found


def declared_from_resource(resource: Mapping[str, Any]) -> DeclaredSchedule:
    metadata = resource.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = metadata.get("namespace")
    ref = ResourceRef(name=name, namespace=str(namespace) if namespace else None)
    spec = resource.get("spec") or {}
    status = resource.get("status") or {}
    generation = metadata.get("generation")
    owner = spec.get("user") if isinstance(spec, Mapping) else None
    declared = DeclaredSchedule(
        ref=ref,
        owner=owner if isinstance(owner, str) and owner else None,
        definition=None,
        generation=generation if isinstance(generation, int) else None,
        status=dict(status) if isinstance(status, Mapping) else {},
    )
    if resource.get("apiVersion") != API_VERSION:
        declared.error = f"apiVersion must be {API_VERSION}"
    elif not re.match(NAME_PATTERN, name):
        declared.error = "metadata.name must be a DNS label (lowercase letters, digits, '-'; at most 63)"
    elif not isinstance(spec, Mapping):
        declared.error = "spec must be a mapping"
    elif declared.owner is None:
        declared.error = "spec.user: required (the user the runs act for)"
    else:
        fields = snake_keys({k: v for k, v in spec.items() if k != "user"})
        try:
            declared.definition = ScheduleDefinition.model_validate({**fields, "name": name})
        except ValidationError as error:
            declared.error = describe_validation_error(error)
    return declared


def describe_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        loc = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"spec.{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
    return "; ".join(parts)


# --- status


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Mapping[str, Any], *, ready: bool, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The `Ready` condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ready else "False"
    old = next(
        (c for c in previous.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == "Ready"),
        None,
    )
    since = old.get("lastTransitionTime") if old and old.get("status") == status else rfc3339(now)
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


def _history_entry(record: FireRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fireId": record.fire_id,
        "trigger": record.trigger.value,
        "scheduledTime": rfc3339(record.scheduled_at),
        "startTime": rfc3339(record.fired_at),
        "dispatch": record.dispatch.value,
        "taskId": record.task_id,
        "outcome": record.outcome.value if record.outcome else None,
        "runStatus": record.run_status.value if record.run_status else None,
        "endTime": rfc3339(record.ended_at),
        "error": record.error,
        "toolkit": record.toolkit,
        "connectUrl": record.connect_url,
        "reason": record.reason,
        "agent": record.agent.name if record.agent else None,
        "agentVersion": record.agent.version if record.agent else None,
    }
    if record.usage is not None:
        entry["usage"] = {
            "inputTokens": record.usage.input_tokens,
            "outputTokens": record.usage.output_tokens,
            "modelCalls": record.usage.model_calls,
            "toolCalls": record.usage.tool_calls,
        }
    return {k: v for k, v in entry.items() if v is not None}


def render_status(
    declared: DeclaredSchedule,
    *,
    ready: bool,
    reason: str,
    message: str,
    now: datetime,
    view: ScheduleView | None = None,
    history: RunHistory | None = None,
) -> dict[str, Any]:
    """The status subresource for one ScheduledRun. Without a fresh history (the ledger did not
    answer) the previous runHistory and active list are kept."""
    previous = declared.status
    status: dict[str, Any] = {}
    if declared.generation is not None:
        status["observedGeneration"] = declared.generation
    if view is not None:
        status["scheduleId"] = view.schedule_id
        status["suspended"] = view.definition.suspend
        if view.next_run_times:
            status["nextRunTime"] = rfc3339(view.next_run_times[0])
    if history is not None:
        records: Sequence[FireRecord] = history.records
        started = [r.fired_at for r in records if r.task_id is not None]
        last = max(started, default=None) or (view.last_run_at if view else None)
        if last is not None:
            status["lastRunTime"] = rfc3339(last)
        status["active"] = [
            {"fireId": r.fire_id, "taskId": r.task_id, "startTime": rfc3339(r.fired_at)}
            for r in records
            if r.active
        ]
        status["runHistory"] = [_history_entry(r) for r in records[:MAX_STATUS_HISTORY]]
    else:
        for key in ("lastRunTime", "active", "runHistory"):
            if key in previous:
                status[key] = previous[key]
    status["conditions"] = [condition(previous, ready=ready, reason=reason, message=message, now=now)]
    return status
