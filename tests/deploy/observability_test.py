"""deploy/prometheus and deploy/grafana: rules pass promtool's checks and unit tests; every query
(alerts and dashboard panels) parses and names metrics and labels the code really exports.

The metric catalogue is read from the code: every `kron.*.metrics` module's collectors, and the
collectors held by its `*Metrics` classes. Temporal server metrics are listed below by hand (they
are not kron's code) with the labels the server exports.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from kron_testing.dashboards import (
    DASHBOARDS,
    RULES,
    RULES_TEST,
    alert_names,
    panel_exprs,
    rule_exprs,
    substitute,
)

# Temporal server (matching service) metrics the rules and dashboards use; labels as the server
# exports them (measured on `temporal server start-dev`, Server 1.32).
_TEMPORAL_LABELS = (
    "namespace",
    "namespace_state",
    "operation",
    "partition",
    "service_name",
    "task_type",
    "taskqueue",
    "worker_build_id",
    "worker_deployment_name",
    "worker_version",
)
EXTERNAL_METRICS = {
    "approximate_backlog_count": {*_TEMPORAL_LABELS, "task_priority"},
    "approximate_backlog_age_seconds": set(_TEMPORAL_LABELS),
    "pending_polls": set(_TEMPORAL_LABELS),
}
# Labels Prometheus itself attaches to every scraped series.
SCRAPE_LABELS = {"job", "instance"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "le",
}


@dataclass(frozen=True)
class Metric:
    family: str
    kind: str
    labels: frozenset[str]


def _collectors() -> list[MetricWrapperBase]:
    import kron  # pants: no-infer-dep (the package root: its modules are listed in BUILD)

    found: list[MetricWrapperBase] = []
    for info in pkgutil.iter_modules(kron.__path__, "kron."):
        try:
            module = importlib.import_module(f"{info.name}.metrics")
        except ModuleNotFoundError as error:
            if error.name == f"{info.name}.metrics":
                continue
            raise
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                found.append(value)
            elif (
                isinstance(value, type)
                and value.__name__.endswith("Metrics")
                and value.__module__ == module.__name__
            ):
                instance = value(CollectorRegistry())
                found += [v for v in vars(instance).values() if isinstance(v, MetricWrapperBase)]
    return found


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Metric]:
    """Every series name a scrape of kron can show, with its labels."""
    names: dict[str, Metric] = {}
    for collector in _collectors():
        family, kind = str(collector._name), str(collector._type)  # prometheus_client has no public accessor
        labels = frozenset(collector._labelnames)
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_count", "_sum", "_created"],
            "gauge": [""],
            "summary": ["", "_count", "_sum", "_created"],
        }[kind]
        for suffix in suffixes:
            extra: set[str] = {"le"} if suffix == "_bucket" else set()
            names[family + suffix] = Metric(family, kind, frozenset(labels | extra))
    assert any(n.startswith("kron_runs") for n in names), "the worker's metrics were not found"
    assert any(n.startswith("kron_gateway_") for n in names), "the gateway's metrics were not found"
    for name, external_labels in EXTERNAL_METRICS.items():
        names[name] = Metric(name, "gauge", frozenset(external_labels))
    return names


def _substitute(expr: str) -> str:
    return substitute(expr, GRAFANA_VARIABLES)


def _selectors(expr: str) -> list[tuple[str, set[str], set[str]]]:
    """(metric, label names matched on, names in the enclosing by/on/without clauses) per metric."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may contain anything
    grouping = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping |= {label.strip() for label in clause.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = match.group(1), match.group(2) or ""
        following = text[match.end() :].lstrip()
        if name in PROMQL_WORDS or following.startswith("(") or re.fullmatch(r"\d.*|e\d*", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        found.append((name, labels, grouping))
    return found


ALL_EXPRS = rule_exprs() + panel_exprs()


def test_there_are_rules_and_panels() -> None:
    assert DASHBOARDS, "no dashboard under deploy/grafana"
    assert len(rule_exprs()) >= 4 and len(panel_exprs()) >= 20


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = set(alert_names())
    assert alerts <= tested, f"alerts never seen firing in rules_test.yaml: {sorted(alerts - tested)}"


def test_every_panel_query_parses(promtool: str, tmp_path: Path) -> None:
    """promtool parses each panel's PromQL (as a recording rule), Grafana variables substituted."""
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:query_{i}", "expr": _substitute(expr)}
                    for i, (_, expr) in enumerate(panel_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("where,expr", ALL_EXPRS, ids=[w for w, _ in ALL_EXPRS])
def test_queries_use_real_metrics_and_labels(catalogue: dict[str, Metric], where: str, expr: str) -> None:
    selectors = _selectors(_substitute(expr))
    assert selectors, f"{where}: no metric found in {expr!r}"
    labels_in_query: set[str] = set()
    for name, labels, _ in selectors:
        assert name in catalogue, f"{where}: {name} is not exported by kron or the Temporal server"
        unknown = labels - catalogue[name].labels - SCRAPE_LABELS
        assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"
        labels_in_query |= catalogue[name].labels
    grouping = set().union(*(g for _, _, g in selectors))
    unknown = grouping - labels_in_query - SCRAPE_LABELS
    assert not unknown, f"{where}: grouping by label(s) no metric here has: {sorted(unknown)}"


def test_dashboards_are_importable() -> None:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}" and "datasource" in variables
                assert panel.get("description"), f"{path.name}: {panel['title']} has no description"
