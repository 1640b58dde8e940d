"""deploy/k8s and deploy/keda: every overlay renders, validates strictly and agrees with the code.

What the manifests must provide is derived from the code: env vars from the deployables' pydantic
settings classes, listen ports from their `*port` settings, the ScaledObject schema from KEDA's CRD.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # no types, no stubs package
import pytest
import yaml

from .conftest import VARIANTS
from .manifests import (
    DEPLOY,
    K8S,
    KEDA,
    KEDA_SCALEDOBJECT_CRD,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    SECRET_EXAMPLE,
    by_kind,
    configmap_data,
    container_env,
    deployable_package,
    kubernetes_schema_from_crd,
    load_yaml_documents,
    named_ports,
    pod_templates,
    probe_port,
    selects,
    settings_classes,
    settings_fields,
)

Doc = dict[str, Any]
# Long enough for every secret check in the settings classes (the JWT secret needs 32).
SECRET_PLACEHOLDER = "placeholder-secret-value-for-manifest-tests-0123456789"
# KEDA kinds we validate against vendored CRDs instead of kubernetes-validate's built-in schemas.
CUSTOM_KINDS = {"ScaledObject"}


def _name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _kron_deployments(docs: list[Doc]) -> list[tuple[Doc, str]]:
    out = []
    for doc in by_kind(docs, "Deployment"):
        package = deployable_package(doc)
        if package is not None:
            out.append((doc, package))
    return out


@pytest.fixture(scope="module")
def scaledobject_schema() -> dict[str, Any]:
    (crd,) = load_yaml_documents(KEDA_SCALEDOBJECT_CRD)
    return kubernetes_schema_from_crd(crd, "v1alpha1")


# --- rendering and schemas


def test_every_overlay_and_component_is_rendered() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)
    used: set[str] = set()
    for variant in VARIANTS:
        used.update(v for v in variant.split("+") if v.startswith("keda/"))
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        used.update(
            os.path.relpath((K8S / "overlays" / overlay / c).resolve(), DEPLOY)
            for c in kustomization.get("components", [])
        )
    components = {
        os.path.relpath(p.parent, DEPLOY)
        for p in KEDA.glob("*/kustomization.yaml")
        if yaml.safe_load(p.read_text()).get("kind") == "Component"
    }
    assert components <= used, f"components no test renders: {sorted(components - used)}"


def test_renders_into_the_kron_namespace(docs: list[Doc]) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    assert docs
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == "kron", _name(doc)
    names = Counter((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs)
    assert not [k for k, n in names.items() if n > 1], "duplicate objects"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_validate_strictly(docs: list[Doc], version: str) -> None:
    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    failures = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.utils.SchemaNotFoundError:
            failures.append(f"{_name(doc)}: no schema for {doc['apiVersion']} in Kubernetes {version}")
        except kubernetes_validate.utils.ValidationError as error:
            failures.append(f"{_name(doc)}: {error.message} at {list(error.path)}")
    assert not failures, "\n".join(failures)


def test_custom_kinds_validate_against_their_crds(
    docs: list[Doc], scaledobject_schema: dict[str, Any]
) -> None:
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
            jsonschema.validate(doc, scaledobject_schema)
        else:
            assert doc["kind"] not in CUSTOM_KINDS


def test_crd_schema_conversion_is_strict(scaledobject_schema: dict[str, Any]) -> None:
    """The converted schema must reject what the API server would (or the checks above are moot)."""
    good: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "cpu", "metadata": {"value": "1"}}]},
    }
    jsonschema.validate(good, scaledobject_schema)
    bad_specs: list[dict[str, Any]] = [
        {**good["spec"], "minReplicas": 1},  # a typo: minReplicaCount
        {**good["spec"], "minReplicaCount": -1},
        {**good["spec"], "triggers": []},
        {**good["spec"], "triggers": [{"type": "cpu", "metadata": {"value": 1}}]},  # metadata is strings
    ]
    for bad_spec in bad_specs:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, scaledobject_schema)


# --- selectors


def test_workload_selectors_match_their_templates(docs: list[Doc]) -> None:
    for workload, template in pod_templates(docs):
        selector = workload["spec"]["selector"]
        assert selector.get("matchLabels"), _name(workload)
        assert selects(selector, template["metadata"]["labels"]), _name(workload)
        others = [
            w
            for w, t in pod_templates(docs)
            if w is not workload and selects(selector, t["metadata"]["labels"])
        ]
        assert (
            not others
        ), f"{_name(workload)} selects other workloads' pods too: {[_name(o) for o in others]}"


def test_services_select_pods_and_their_ports(docs: list[Doc]) -> None:
    for service in by_kind(docs, "Service"):
        selector = service["spec"].get("selector")
        assert selector, f"{_name(service)} has no selector"
        matched = [t for _, t in pod_templates(docs) if selects(selector, t["metadata"]["labels"])]
        assert matched, f"{_name(service)} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in matched:
                ports = named_ports(template["spec"])
                if isinstance(target, str):
                    assert target in ports, f"{_name(service)}: no container port named {target!r}"
                else:
                    assert target in ports.values(), f"{_name(service)}: no container port {target}"


def test_disruption_budgets_and_policies_select_pods(docs: list[Doc]) -> None:
    templates = [t for _, t in pod_templates(docs)]
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"], t["metadata"]["labels"]) for t in templates), _name(pdb)
    for policy in by_kind(docs, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        matched = [t for t in templates if selects(selector, t["metadata"]["labels"])]
        assert matched, f"{_name(policy)} selects no pods"
        # A named port must exist on some pod the policy is about (else the rule matches nothing).
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str):
                    assert any(port["port"] in named_ports(t["spec"]) for t in matched), (_name(policy), port)


def test_every_scalable_deployment_has_exactly_one_autoscaler(docs: list[Doc]) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    targets: Counter[str] = Counter()
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, _name(hpa)
        targets[ref["name"]] += 1
    for scaled in by_kind(docs, "ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        assert ref.get("kind", "Deployment") == "Deployment" and ref["name"] in deployments, _name(scaled)
        targets[ref["name"]] += 1
    for name, deployment in deployments.items():
        if "replicas" in deployment["spec"]:
            assert targets[name] == 0, f"{name} sets replicas and is autoscaled: every apply resets it"
        else:
            assert targets[name] == 1, f"{name}: {targets[name]} autoscalers (want exactly one)"


# --- environment: every setting the code reads is provided


def test_deployables_are_the_ones_the_code_has(docs: list[Doc]) -> None:
    packages = {package for _, package in _kron_deployments(docs)}
    assert {"kron.gateway", "kron.worker"} <= packages
    names = {cls.__name__ for package in packages for cls in settings_classes(package)}
    assert {"WorkerSettings", "AgentSettings", "GatewaySettings"} <= names


def test_env_provides_every_setting(docs: list[Doc]) -> None:
    configmaps = configmap_data(docs)
    problems = []
    for deployment, package in _kron_deployments(docs):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = container_env(container, configmaps)
        problems += [f"{_name(deployment)}: {m}" for m in env.missing]
        for setting in settings_fields(package):
            provided = [n for n in setting.names if n in env.sources]
            if not provided:
                problems.append(
                    f"{_name(deployment)}: {setting.owner} ({' or '.join(setting.names)}) not provided"
                )
                continue
            source = env.sources[provided[0]]
            if setting.required_value and source.value is None and not source.origin.startswith("secret:"):
                problems.append(f"{_name(deployment)}: {setting.owner} ({provided[0]}) has no value")
    assert not problems, "\n".join(problems)


def test_env_has_nothing_the_code_does_not_read(docs: list[Doc]) -> None:
    """Catches typos and settings that were renamed or removed in the code."""
    configmaps = configmap_data(docs)
    deployments = _kron_deployments(docs)
    read_by = {package: {n for f in settings_fields(package) for n in f.names} for _, package in deployments}
    read_by_any = set().union(*read_by.values())
    shared = Counter(
        ref["configMapRef"]["name"]
        for deployment, _ in deployments
        for ref in deployment["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])
    )
    problems = []
    for deployment, package in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for name, source in container_env(container, configmaps).sources.items():
            if (
                source.configmap is not None
                and shared[source.configmap] > 1
                and source.origin.startswith("envFrom:")
            ):
                if name not in read_by_any:
                    problems.append(f"shared ConfigMap {source.configmap}: {name} is read by no deployable")
            elif name not in read_by[package]:
                problems.append(f"{_name(deployment)}: {name} ({source.origin}) is not a {package} setting")
    assert not problems, "\n".join(sorted(set(problems)))


def test_settings_accept_the_rendered_env(docs: list[Doc]) -> None:
    """The values are valid for the code: ranges, types, and the production checks (JWT secret,
    Composio key) with the secrets present."""
    configmaps = configmap_data(docs)
    for deployment, package in _kron_deployments(docs):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        values = container_env(container, configmaps).values(SECRET_PLACEHOLDER)
        for cls in settings_classes(package):
            with mock.patch.dict(os.environ, values, clear=True):
                cls()  # raises pydantic.ValidationError with the offending variable


def test_secrets_by_reference_only(docs: list[Doc]) -> None:
    assert not by_kind(docs, "Secret"), "no Secret is rendered: they are created out of band"
    (example,) = load_yaml_documents(SECRET_EXAMPLE)
    assert example["kind"] == "Secret"
    keys = set(example.get("stringData", {})) | set(example.get("data", {}))
    configmaps = configmap_data(docs)
    for deployment, _ in _kron_deployments(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for var, secret, key in container_env(container, configmaps).secret_refs:
                assert secret == example["metadata"]["name"], (_name(deployment), var, secret)
                assert (
                    key in keys
                ), f"{_name(deployment)}: {var} reads key {key!r}, not in {SECRET_EXAMPLE.name}"
            for name, value in container_env(container, configmaps).values("").items():
                if re.search(r"(KEY|SECRET|TOKEN|PASSWORD)$", name) and value:
                    pytest.fail(f"{_name(deployment)}: {name} has a literal value; use a secretKeyRef")


def test_examples_validate(rendered: dict[str, list[Doc]], scaledobject_schema: dict[str, Any]) -> None:
    """deploy/k8s/examples (never applied) still match the API: built-in kinds strictly, custom
    kinds against the CRDs the base installs (or KEDA's)."""
    crds = {
        (d["spec"]["group"], v["name"], d["spec"]["names"]["kind"]): kubernetes_schema_from_crd(d, v["name"])
        for d in by_kind(rendered["overlays/prod"], "CustomResourceDefinition")
        for v in d["spec"]["versions"]
    }
    crds[("keda.sh", "v1alpha1", "ScaledObject")] = scaledobject_schema
    version = kubernetes_validate.utils.latest_version()
    for path in sorted((K8S / "examples").glob("*.yaml")):
        for doc in load_yaml_documents(path):
            group, _, api_version = doc["apiVersion"].rpartition("/")
            if (group, api_version, doc["kind"]) in crds:
                jsonschema.validate(doc, crds[(group, api_version, doc["kind"])])
            else:
                kubernetes_validate.validate(doc, version, strict=True)


def test_the_secret_example_is_never_applied() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        listed = [str(x) for key in ("resources", "components", "patches") for x in spec.get(key, [])]
        assert not [x for x in listed if "examples" in x or SECRET_EXAMPLE.name in x], kustomization


# --- probes, ports, drain


def test_probes_point_at_the_ports_the_code_listens_on(docs: list[Doc]) -> None:
    configmaps = configmap_data(docs)
    for deployment, template in pod_templates(docs):
        package = deployable_package(deployment)
        for container in template["spec"]["containers"]:
            declared = {p["containerPort"] for p in container.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert kind in container, f"{_name(deployment)}/{container['name']}: no {kind}"
                assert probe_port(container[kind], container) in declared, (_name(deployment), kind)
            if package is None:
                continue
            values = container_env(container, configmaps).values(SECRET_PLACEHOLDER)
            listening = set()
            for setting in settings_fields(package):
                value = next((values[n] for n in setting.names if n in values), None)
                if setting.is_port and value is not None:
                    listening.add(int(value))
                if setting.is_host:
                    assert (
                        value == "0.0.0.0"
                    ), f"{_name(deployment)}: {setting.owner}={value!r} (probes and scrapes need the pod IP)"
            assert (
                declared <= listening
            ), f"{_name(deployment)}: containerPorts {declared}, the code listens on {listening}"
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe_port(container[kind], container) in listening, (_name(deployment), kind)
            if package is not None:  # every kron deployable serves both
                paths = {kind: container[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
                assert paths == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}, (
                    _name(deployment), paths)


def test_grace_period_outlasts_prestop_and_drain(docs: list[Doc]) -> None:
    configmaps = configmap_data(docs)
    for deployment, template in pod_templates(docs):
        spec = template["spec"]
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in spec["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            drain = 0.0
            package = deployable_package(deployment)
            if package is not None:
                values = container_env(container, configmaps).values(SECRET_PLACEHOLDER)
                for setting in settings_fields(package):
                    if setting.owner.endswith(".drain_seconds"):
                        name = next(n for n in setting.names if n in values)
                        drain = float(values[name])
            # 10 s for what follows the drain (closing clients, flushing) before the SIGKILL.
            assert (
                grace >= pre_stop + drain + 10
            ), f"{_name(deployment)}: grace {grace}s < preStop {pre_stop}s + drain {drain}s + 10s"
        if deployable_package(deployment) == "kron.gateway":
            assert any("preStop" in c.get("lifecycle", {}) for c in spec["containers"])


# --- security and resources


def test_pods_run_restricted(docs: list[Doc]) -> None:
    for workload, template in pod_templates(docs):
        spec = template["spec"]
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, _name(workload)
        assert pod.get("runAsUser", 0) >= 10000, _name(workload)
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", _name(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container.get("securityContext", {})
            where = f"{_name(workload)}/{container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert not ctx.get("privileged"), where
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{where}: {section}"
        if workload["metadata"]["labels"].get("app.kubernetes.io/component") in ("gateway", "worker"):
            assert spec.get("automountServiceAccountToken") is False, _name(workload)


def test_scheduler_rbac_covers_scheduledruns(docs: list[Doc]) -> None:
    crds = {d["spec"]["names"]["plural"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    if "scheduledruns" not in crds:
        pytest.fail("the ScheduledRun CRD (deploy/k8s/base/crds/scheduledrun.yaml) is not rendered")
    group = crds["scheduledruns"]["spec"]["group"]
    rules = [r for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for r in role["rules"]]
    granted = {
        (res, verb) for r in rules if group in r["apiGroups"] for res in r["resources"] for verb in r["verbs"]
    }
    for need in [("scheduledruns", v) for v in ("get", "list", "watch")] + [
        ("scheduledruns/status", "patch")
    ]:
        assert need in granted, need
    scheduler_sa = {
        t["spec"].get("serviceAccountName")
        for w, t in pod_templates(docs)
        if deployable_package(w) == "kron.scheduler"
    }
    bound = {
        s["name"]
        for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
        for s in b["subjects"]
    }
    assert scheduler_sa and scheduler_sa <= bound


# --- KEDA


def test_scaledobjects_scale_the_worker_safely(docs: list[Doc]) -> None:
    """Scale to zero only when KEDA also counts running workflows (kedacore/keda#7368): the backlog
    alone reads 0 while runs execute."""
    configmaps = configmap_data(docs)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    for scaled in by_kind(docs, "ScaledObject"):
        spec = scaled["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        containers = {c["name"]: c for c in target["spec"]["template"]["spec"]["containers"]}
        container = containers[spec["scaleTargetRef"]["envSourceContainerName"]]
        env = container_env(container, configmaps).values(SECRET_PLACEHOLDER)
        temporal = [t for t in spec["triggers"] if t["type"] == "temporal"]
        assert len(temporal) == 1
        meta = temporal[0]["metadata"]
        assert set(meta["queueTypes"].split(",")) == {"workflow", "activity"}
        for key, value in meta.items():
            if key.endswith("FromEnv"):
                assert value in env, f"{key}: {value} is not in {container['name']}'s environment"
        assert env.get(meta.get("taskQueueFromEnv", "")) or meta.get("taskQueue")
        running_count = meta.get("includeRunningWorkflowCount") == "true"
        floor = spec.get("idleReplicaCount", spec.get("minReplicaCount", 0))
        if floor == 0:
            assert running_count, "scales to 0 on the backlog alone: in-flight runs would be paused"
            assert spec.get("minReplicaCount", 0) >= 1
        grace = target["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        # Scale-in is slower than a removed worker's drain: never a fleet of draining workers.
        assert behavior["stabilizationWindowSeconds"] >= grace
        assert all(
            p["type"] == "Pods" and p["value"] == 1 and p["periodSeconds"] >= grace / 2
            for p in behavior["policies"]
        )
        assert spec.get("fallback", {}).get("behavior") == "currentReplicasIfHigher"
