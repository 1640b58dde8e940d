from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml

from kron.contracts.models import ToolPermission, ToolSafety
from kron.scheduler.declared_agents import agent_resources, declared_agent, render_agent_status, snake_spec

REPO = Path(__file__).resolve().parents[4]
CRD = REPO / "deploy/k8s/base/crds/agent.yaml"
EXAMPLE = REPO / "deploy/k8s/examples/agent-triage.yaml"
NOW = datetime(2026, 12, 8, 12, 0, 0, tzinfo=UTC)


def resource(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kron.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "triage", "namespace": "team-a", "generation": 3}, "spec": spec}


def crd_schema() -> dict[str, Any]:
    [version] = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_the_example_parses_and_validates_against_the_crd() -> None:
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    [triage] = [declared_agent(r) for r in agent_resources(documents)]
    assert triage.error is None and triage.spec is not None
    policy = triage.spec.tool_policy
    assert policy.permission("GMAIL_SEND_EMAIL") is ToolPermission.ASK  # keys kept as written
    assert policy.permission("GMAIL_DELETE_MESSAGE") is ToolPermission.DENY
    assert policy.safety_of("GMAIL_ADD_LABEL_TO_EMAIL") is ToolSafety.IDEMPOTENT
    assert triage.spec.limits.max_iterations == 20 and triage.spec.approval_timeout_seconds == 7200
    schema = crd_schema()
    for document in documents:
        jsonschema.validate(document, schema)
    status = render_agent_status(triage, ready=True, reason="Synced", message="ok", now=NOW, latest=4)
    assert status["latestVersion"] == 4 and "observedGeneration" not in status
    assert render_agent_status(declared_agent(resource()), ready=False, reason="Invalid", message="x", now=NOW,
                               latest=None)["observedGeneration"] == 3
    jsonschema.validate({**documents[0], "status": status}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(resource(toolPolicy={"permissions": {"github": "maybe"}}), schema)


def test_the_crd_spec_has_every_api_field() -> None:
    """The CRD and the REST body must not drift apart."""
    from kron.contracts.agents import AgentLimits, AgentSpec

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)

    spec = crd_schema()["properties"]["spec"]["properties"]
    assert set(spec) == {camel(f) for f in AgentSpec.model_fields}
    assert set(spec["limits"]["properties"]) == {camel(f) for f in AgentLimits.model_fields}


def test_free_form_keys_are_kept_and_the_rest_snake_cased() -> None:
    converted = snake_spec({"toolPolicy": {"permissions": {"GitHub_Create": "ask"}},
                            "mcpServers": [{"name": "t", "url": "u",
                                            "headers": {"X-Api-Key": {"secretKeyRef": {"name": "s", "key": "k"}}}}]})
    assert converted == {"tool_policy": {"permissions": {"GitHub_Create": "ask"}},
                         "mcp_servers": [{"name": "t", "url": "u",
                                          "headers": {"X-Api-Key": {"secret_key_ref": {"name": "s", "key": "k"}}}}]}


@pytest.mark.parametrize("changes, error", [
    ({"apiVersion": "kron.dev/v2"}, "apiVersion"),
    ({"metadata": {"name": "Not_A_Name"}}, "metadata.name"),
    ({"spec": {"limits": {"maxIterations": "ten"}}}, "spec.limits.max_iterations"),
    ({"spec": {"mcpServers": [{"name": "t", "url": "u", "headers": {"Authorization": "Bearer x"}}]}}, "spec.mcp_servers"),
])
def test_invalid_agents_say_why(changes: dict[str, Any], error: str) -> None:
    declared = declared_agent({**resource(), **changes})
    assert declared.spec is None and declared.error is not None and error in declared.error
