from __future__ import annotations

import io
import json

import pytest

from kron.agent_core.runner import main


def test_demo_run_completes_offline_and_says_it_is_a_demo() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", "count these words please", "--demo", "--json"], out=out, err=err)
    assert code == 0
    result = json.loads(out.getvalue())
    assert result["status"] == "completed"
    assert result["usage"]["tool_calls"] == 3
    assert '"words": 4' in result["output"]
    assert "demo" in result["output"]
    assert "DEMO_WORD_COUNT" in err.getvalue()


def test_without_a_key_the_runner_says_so_and_uses_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", "hello"], out=out, err=err) == 0
    assert "ANTHROPIC_API_KEY is not set" in err.getvalue()
    assert "status: completed" in out.getvalue()


def test_max_iterations_is_reported_and_exit_code_is_nonzero() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", "hello", "--demo", "--max-iterations", "1"], out=out, err=err) == 1
    assert "status: max_iterations" in out.getvalue()
