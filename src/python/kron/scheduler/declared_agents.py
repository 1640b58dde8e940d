"""Declared agents: `Agent` resources (deploy/k8s/base/crds/agent.yaml) from Kubernetes or the local
YAML file, kept in step with the shared agent registry (kron.common.agents) on every sync pass.

    apiVersion: kron.dev/v1alpha1
    kind: Agent
    metadata: {name: triage, namespace: team-a}
    spec:
      description: Sorts the inbox
      systemPrompt: You triage email.
      toolkits: [gmail]
      toolPolicy: {permissions: {GMAIL_SEND_EMAIL: ask}}
      limits: {maxIterations: 20}

Spec keys are the REST API's /agents body in camelCase. Declared agents are shared (every user sees
and runs them) and read-only over the API. An agent that turns invalid keeps its last good version;
one removed from the source is deleted (no new runs; running ones finish). Status: the latest
version and a Ready condition.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from kron.common.agents import AgentStore, AgentsUnavailable
from kron.common.logging import get_logger
from kron.common.schedules import utcnow
from kron.contracts.agents import AgentSpec
from kron.contracts.models import DNS_LABEL_PATTERN
from kron.scheduler.resources import (
    API_VERSION,
    GROUP,
    LIST_KINDS,
    VERSION,
    ResourceRef,
    condition,
    describe_validation_error,
)
from kron.scheduler.sources import SourceError

log = get_logger(__name__)

KIND = "Agent"
PLURAL = "agents"
STATUS_KEYS = ("observedGeneration", "latestVersion", "conditions")
# Maps whose keys are the user's (tool slugs, header names): their keys are kept as written.
_FREE_FORM = frozenset({"permissions", "safety", "headers"})
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass
class DeclaredAgent:
    ref: ResourceRef
    spec: AgentSpec | None
    error: str | None = None
    generation: int | None = None
    status: dict[str, Any] = field(default_factory=dict)


def snake_spec(value: Any, *, free: bool = False) -> Any:
    """camelCase keys to snake_case all the way down, except the keys of free-form maps."""
    if isinstance(value, Mapping):
        return {
            (key if free else _CAMEL_BOUNDARY.sub("_", key).lower()): snake_spec(item, free=not free and key in _FREE_FORM)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [snake_spec(item) for item in value]
    return value


def agent_resources(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if document.get("kind") in LIST_KINDS or document.get("kind") == f"{KIND}List":
            found.extend(agent_resources(document.get("items") or []))
        elif document.get("kind") == KIND:
            found.append(document)
    return found


def declared_agent(resource: Mapping[str, Any]) -> DeclaredAgent:
    metadata = resource.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = metadata.get("namespace")
    generation = metadata.get("generation")
    status = resource.get("status") or {}
    declared = DeclaredAgent(
        ref=ResourceRef(name=name, namespace=str(namespace) if namespace else None),
        spec=None,
        generation=generation if isinstance(generation, int) else None,
        status=dict(status) if isinstance(status, Mapping) else {},
    )
    spec = resource.get("spec") or {}
    if resource.get("apiVersion") != API_VERSION:
        declared.error = f"apiVersion must be {API_VERSION}"
    elif not re.match(DNS_LABEL_PATTERN, name):
        declared.error = "metadata.name must be a DNS label (lowercase letters, digits, '-'; at most 63)"
    elif not isinstance(spec, Mapping):
        declared.error = "spec must be a mapping"
    else:
        try:
            declared.spec = AgentSpec.model_validate(snake_spec(spec))
        except ValidationError as error:
            declared.error = describe_validation_error(error)
    return declared


def render_agent_status(
    declared: DeclaredAgent, *, ready: bool, reason: str, message: str, now: datetime, latest: int | None
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if declared.generation is not None:
        status["observedGeneration"] = declared.generation
    latest = latest if latest is not None else declared.status.get("latestVersion")
    if isinstance(latest, int):
        status["latestVersion"] = latest
    status["conditions"] = [condition(declared.status, ready=ready, reason=reason, message=message, now=now)]
    return status


class AgentSource(Protocol):
    source_id: str

    async def load_agents(self) -> list[DeclaredAgent]:
        """Every Agent the source has now. Raises SourceError when it cannot tell."""
        ...

    async def report_agent_status(self, declared: DeclaredAgent, status: dict[str, Any]) -> None: ...


class YamlAgentSource:
    """Agent documents in the scheduler's local YAML file (next to its ScheduledRuns). Statuses are
    kept in memory (`statuses()`): a local file is not written back."""

    def __init__(self, path: str | Path, *, source_id: str = "yaml") -> None:
        self.path = Path(path)
        self.source_id = source_id
        self._statuses: dict[str, dict[str, Any]] = {}

    async def load_agents(self) -> list[DeclaredAgent]:
        try:
            text = await asyncio.to_thread(self.path.read_text, "utf-8")
        except OSError as error:
            raise SourceError(f"{self.path}: cannot read ({error.strerror})") from None
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise SourceError(f"{self.path}: not valid YAML ({error.__class__.__name__})") from None
        declared = [declared_agent(r) for r in agent_resources(documents)]
        for item in declared:
            item.status = dict(self._statuses.get(item.ref.key, {}))
        return declared

    async def report_agent_status(self, declared: DeclaredAgent, status: dict[str, Any]) -> None:
        self._statuses[declared.ref.key] = status

    def statuses(self) -> dict[str, dict[str, Any]]:
        return dict(self._statuses)


class KubernetesAgentSource:
    """Agent resources through the Kubernetes API (`kubernetes` CustomObjectsApi, in threads).
    Changes are picked up at the sync's next pass (every KRON_SCHEDULER_RESYNC_SECONDS at most)."""

    def __init__(self, api: Any, *, namespace: str | None = None, source_id: str = "kubernetes") -> None:
        self.api = api
        self.namespace = namespace
        self.source_id = source_id

    async def load_agents(self) -> list[DeclaredAgent]:
        return await asyncio.to_thread(self._load)

    async def report_agent_status(self, declared: DeclaredAgent, status: dict[str, Any]) -> None:
        await asyncio.to_thread(self._patch_status, declared, status)

    def _load(self) -> list[DeclaredAgent]:
        try:
            if self.namespace:
                response = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                  _request_timeout=30)
            else:
                response = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)
        except Exception as error:  # noqa: BLE001 - ApiException, urllib3 errors: the source is unreadable
            raise SourceError(f"listing {PLURAL} failed: {type(error).__name__}") from None
        if not isinstance(response, Mapping) or not isinstance(response.get("items"), list):
            raise SourceError(f"listing {PLURAL} returned no item list")
        return [declared_agent({"apiVersion": API_VERSION, "kind": KIND, **item}) for item in response["items"]]

    def _patch_status(self, declared: DeclaredAgent, status: dict[str, Any]) -> None:
        if not declared.ref.namespace:
            raise SourceError(f"{declared.ref.key}: an Agent without a namespace")
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, declared.ref.namespace, PLURAL, declared.ref.name,
            {"status": {**dict.fromkeys(STATUS_KEYS), **status}},
            _content_type="application/merge-patch+json", _request_timeout=30,
        )


class AgentSync:
    """One pass: the source's valid agents into the shared registry (a new version only when a spec
    changed), invalid ones keep their last good version, removed ones are deleted; statuses written."""

    def __init__(self, store: AgentStore, source: AgentSource) -> None:
        self.store = store
        self.source = source

    async def reconcile(self) -> bool:
        try:
            declared = await self.source.load_agents()
        except SourceError as error:
            log.warning("agent source unreadable; nothing changed", source=self.source.source_id, error=str(error))
            return False
        valid: dict[str, AgentSpec] = {}
        keep: list[str] = []
        seen: set[str] = set()
        duplicates: list[DeclaredAgent] = []
        for item in declared:
            if item.ref.name in seen:
                duplicates.append(item)
                continue
            seen.add(item.ref.name)
            if item.spec is not None:
                valid[item.ref.name] = item.spec
            else:
                keep.append(item.ref.name)
        try:
            result = await self.store.sync_declared(self.source.source_id, valid, keep=keep)
        except AgentsUnavailable as error:
            log.warning("agent registry unavailable; retrying next pass", error=str(error))
            return False
        now = utcnow()
        for item in declared:
            name = item.ref.name
            if item in duplicates:
                status = render_agent_status(item, ready=False, reason="Conflict", now=now, latest=None,
                                             message=f"another {self.source.source_id} Agent has this name")
            elif item.spec is None:
                status = render_agent_status(item, ready=False, reason="Invalid", message=item.error or "invalid",
                                             now=now, latest=None)
            elif name in result.conflicts:
                status = render_agent_status(item, ready=False, reason="Conflict", now=now, latest=None,
                                             message=f"an agent of this name is managed by {result.conflicts[name]}")
            else:
                status = render_agent_status(item, ready=True, reason="Synced", now=now,
                                             latest=result.versions.get(name),
                                             message="the shared agent registry has this spec")
            if status != item.status:
                try:
                    await self.source.report_agent_status(item, status)
                    item.status = status
                except Exception as error:  # noqa: BLE001 - best effort; the next pass retries
                    log.warning("agent status update failed", resource=item.ref.key, exc_type=type(error).__name__)
        return True
