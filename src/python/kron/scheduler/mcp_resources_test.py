"""A ScheduledRun resource naming MCP servers: camelCase fields converted, header names kept as
written, literal header values refused, and the spec valid against the CRD's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import yaml

from kron.contracts.mcp import SecretKeyRef
from kron.scheduler.resources import declared_from_resource

CRD = Path(__file__).resolve().parents[4] / "deploy/k8s/base/crds/scheduledrun.yaml"


def resource(mcp_servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "kron.dev/v1alpha1", "kind": "ScheduledRun",
            "metadata": {"name": "digest", "namespace": "team-a", "generation": 1},
            "spec": {"user": "alice", "timing": {"cron": ["0 8 * * 1-5"]},
                     "run": {"goal": "digest", "mcpServers": mcp_servers}}}


SERVER = {"name": "internal-tools", "url": "http://tools.team-a.svc:8080/mcp",
          "headers": {"X-Api-Key": {"secretKeyRef": {"name": "tools-auth", "key": "apiKey"}},
                      "Authorization": {"env": "MCP_TOOLS_TOKEN"}}}


def test_mcp_servers_parse_with_header_names_as_written() -> None:
    declared = declared_from_resource(resource([SERVER]))
    assert declared.error is None and declared.definition is not None
    [server] = declared.definition.run.mcp_servers
    assert server.url == SERVER["url"]  # an operator's resource may name a cluster address
    assert set(server.headers) == {"X-Api-Key", "Authorization"}
    assert server.headers["X-Api-Key"].secret_key_ref == SecretKeyRef(name="tools-auth", key="apiKey")
    assert server.headers["Authorization"].env == "MCP_TOOLS_TOKEN"


def test_a_literal_header_value_is_refused() -> None:
    literal = {**SERVER, "headers": {"Authorization": "Bearer abc"}}
    declared = declared_from_resource(resource([literal]))
    assert declared.definition is None and declared.error is not None
    assert "mcp_servers" in declared.error and "Bearer abc" not in declared.error


def test_the_resource_validates_against_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(resource([SERVER]), schema)
