"""Helpers for tests/deploy: render kustomizations, read what the code expects.

Everything the checks compare against is derived: the env vars from the deployables' pydantic
settings classes, the ports from their `*port` settings, the ScaledObject schema from KEDA's CRD.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KEDA = DEPLOY / "keda"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SECRET_EXAMPLE = K8S / "examples" / "kron-secrets.example.yaml"
KEDA_SCALEDOBJECT_CRD = KEDA / "schema" / "keda.sh_scaledobjects.yaml"

# Oldest supported Kubernetes (preStop `sleep` is on by default from 1.30) and the newest schema.
KUBERNETES_VERSIONS = ("1.30.0", "latest")


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` (kustomize built into kubectl: offline, no cluster)."""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def compose(tmp: Path, resources: list[Path], components: list[Path]) -> Path:
    """A throwaway kustomization of repo directories (kustomize wants relative paths)."""
    tmp.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(p, tmp) for p in resources],
        "components": [os.path.relpath(p, tmp) for p in components],
    }
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tmp


# --- what the code reads


@dataclass(frozen=True)
class SettingsField:
    owner: str  # "WorkerSettings.drain_seconds"
    names: tuple[str, ...]  # env var names that set it (any one will do), upper case
    required_value: bool  # False when the code's default is None ("not configured")
    is_port: bool
    is_host: bool


def _env_names(cls: type[BaseSettings], name: str, info: Any) -> tuple[str, ...]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, str):
        names = [alias]
    elif info.alias:
        names = [info.alias]
    else:
        names = [f"{cls.model_config.get('env_prefix', '')}{name}"]
    return tuple(n.upper() for n in names)


@cache
def settings_classes(package: str) -> tuple[type[BaseSettings], ...]:
    """Every BaseSettings class a deployable's modules define or import (so AgentSettings for the
    worker, shared classes from kron.common for gateway and scheduler)."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.rsplit(".", 1)[-1].endswith("_test") or info.name.rsplit(".", 1)[-1] == "conftest":
            continue
        modules.append(importlib.import_module(info.name))
    found: dict[str, type[BaseSettings]] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return tuple(found[k] for k in sorted(found))


def settings_fields(package: str) -> list[SettingsField]:
    fields = []
    for cls in settings_classes(package):
        for name, info in cls.model_fields.items():
            fields.append(
                SettingsField(
                    owner=f"{cls.__name__}.{name}",
                    names=_env_names(cls, name, info),
                    required_value=not (info.default is None and not info.is_required()),
                    is_port=name == "port" or name.endswith("_port"),
                    is_host=name == "host" or name.endswith("_host"),
                )
            )
    return fields


def deployable_package(deployment: dict[str, Any]) -> str | None:
    """kron.<component> for kron's own Deployments (label app.kubernetes.io/component), else None
    (e.g. the dev overlay's Temporal server)."""
    component = deployment["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
    package = f"kron.{component}"
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name != package:  # kron itself, or one of its dependencies: a real failure
            raise
        return None
    return package


# --- what the manifests provide


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every workload."""
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc, doc["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) or a Service's plain map."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match_labels, expressions = selector.get("matchLabels", {}), selector.get("matchExpressions", [])
    else:
        match_labels, expressions = selector, []
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class EnvSource:
    value: str | None  # None: no value (an optional reference to nothing)
    origin: str  # "value", "configmap:<name>", "secret:<name>/<key>", "envFrom:<name>"
    configmap: str | None = None  # the ConfigMap it came from, for envFrom and configMapKeyRef


@dataclass
class ContainerEnv:
    """A container's environment as the kubelet would build it (envFrom, then env on top)."""

    sources: dict[str, EnvSource] = field(default_factory=dict)
    secret_refs: list[tuple[str, str, str]] = field(default_factory=list)  # (var, secret, key)
    missing: list[str] = field(default_factory=list)  # non-optional refs to nothing

    def values(self, secret_placeholder: str) -> dict[str, str]:
        out = {}
        for name, source in self.sources.items():
            if source.origin.startswith("secret:"):
                out[name] = secret_placeholder
            elif source.value is not None:
                out[name] = source.value
        return out


def container_env(container: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> ContainerEnv:
    env = ContainerEnv()
    for entry in container.get("envFrom", []):
        if "configMapRef" in entry:
            ref = entry["configMapRef"]
            data = configmaps.get(ref["name"])
            if data is None:
                if not ref.get("optional"):
                    env.missing.append(f"envFrom configMap {ref['name']}")
                continue
            for key, value in data.items():
                env.sources[entry.get("prefix", "") + key] = EnvSource(
                    value, f"envFrom:{ref['name']}", ref["name"]
                )
        elif "secretRef" in entry:
            env.missing.append(f"envFrom secretRef {entry['secretRef']['name']}: use secretKeyRef per key")
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env.sources[name] = EnvSource(str(var["value"]), "value")
            continue
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            found: str | None = configmaps.get(ref["name"], {}).get(ref["key"])
            if found is None and not ref.get("optional"):
                env.missing.append(f"{name}: configMap {ref['name']} has no key {ref['key']}")
            env.sources[name] = EnvSource(found, f"configmap:{ref['name']}", ref["name"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env.secret_refs.append((name, ref["name"], ref["key"]))
            env.sources[name] = EnvSource(None, f"secret:{ref['name']}/{ref['key']}")
        elif "fieldRef" in source or "resourceFieldRef" in source:
            env.sources[name] = EnvSource("<downward-api>", "downward")
        else:
            env.sources[name] = EnvSource("", "value")
    return env


def configmap_data(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: dict(d.get("data", {})) for d in by_kind(docs, "ConfigMap")}


def named_ports(pod_spec: dict[str, Any]) -> dict[str, int]:
    ports = {}
    for container in pod_spec.get("containers", []):
        for port in container.get("ports", []):
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int:
    handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
    assert handler is not None, f"probe without httpGet/tcpSocket/grpc: {probe}"
    port = handler["port"]
    if isinstance(port, int):
        return port
    names: dict[str, int] = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in names, f"probe port {port!r} is not a named port of {container['name']}: {names}"
    return int(names[port])


def kubernetes_schema_from_crd(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """A CRD version's openAPIV3Schema as JSON Schema, strict like `kubectl apply
    --validate=strict`: unknown fields are errors unless the schema preserves them."""
    for item in crd["spec"]["versions"]:
        if item["name"] == version:
            schema = _to_json_schema(item["schema"]["openAPIV3Schema"])
            # The API server validates ObjectMeta itself; a CRD may only constrain name there.
            schema.get("properties", {}).get("metadata", {}).pop("additionalProperties", None)
            return dict(schema)
    raise KeyError(version)


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        out.pop("nullable", None)
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
