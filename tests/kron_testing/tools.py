"""Find the command-line tools tests drive (kubectl, promtool, prometheus)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_tool(name: str, env_var: str) -> str | None:
    """`name` from env_var, next to this interpreter (PyPI *-bin packages land there), or PATH."""
    candidates = [os.environ.get(env_var, ""), str(Path(sys.executable).parent / name)]
    candidates += [shutil.which(name) or "", f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_tool(name: str, env_var: str, hint: str) -> str:
    """`find_tool`, or skip the test when the tool is absent; with KRON_REQUIRE_TOOLS=1 (CI) an
    absent tool fails the test instead, so a machine missing it cannot pass by skipping."""
    import pytest

    found = find_tool(name, env_var)
    if found is not None:
        return found
    message = f"no {name}: {hint} or set {env_var}"
    if os.environ.get("KRON_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message} (KRON_REQUIRE_TOOLS=1)")
    pytest.skip(message)
