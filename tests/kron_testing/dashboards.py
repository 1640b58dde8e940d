"""The PromQL kron ships: alert and recording rules (deploy/prometheus) and Grafana panel queries
(deploy/grafana), read from the files, for tests that parse them and tests that run them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yaml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))

_COMPARISON_WITH_NUMBER = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?[0-9.]+(?:e[-+]?[0-9]+)?\s*$")
_SET_OPERATOR = re.compile(r"\b(and|or|unless)\b(\s*(?:on|ignoring)\s*\([^)]*\))?")


def rule_exprs() -> list[tuple[str, str]]:
    """(alert or record name, expr) for every rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in groups for r in g["rules"]]


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def panel_exprs() -> list[tuple[str, str]]:
    """("<dashboard file>: <panel title> [<refId>]", expr) for every panel target, rows included."""
    out = []

    def walk(name: str, panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(name, panel.get("panels", []))
            for target in panel.get("targets", []):
                out.append((f"{name}: {panel['title']} [{target['refId']}]", target["expr"]))

    for path in DASHBOARDS:
        walk(path.name, json.loads(path.read_text())["panels"])
    return out


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """The query Grafana would send, with its variables ($__rate_interval, ...) given values."""
    for variable, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr!r}"
    return expr


def alert_signals(expr: str) -> list[str]:
    """An alert's conditions without their thresholds: each operand of its top-level `and` /
    `unless` / `or`, with a trailing comparison against a number removed.

    `(failed / all) > 0.2 and sum(increase(failed[15m])) >= 3` gives `(failed / all)` and
    `sum(increase(failed[15m]))`: what the alert looks at, which must return data whether or not
    the alert fires."""
    operands, depth, start = [], 0, 0
    position = 0
    text = expr.strip()
    while position < len(text):
        char = text[position]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = _SET_OPERATOR.match(text, position)
            if match and (position == 0 or not (text[position - 1].isalnum() or text[position - 1] == "_")):
                operands.append(text[start:position])
                start = position = match.end()
                continue
        position += 1
    operands.append(text[start:])
    return [_COMPARISON_WITH_NUMBER.sub("", operand).strip() for operand in operands]
