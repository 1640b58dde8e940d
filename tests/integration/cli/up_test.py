"""`kron up` from sources, then the real CLI against it: a demo run end to end, the listing and the
task, and a Ctrl-C (SIGINT) that stops every process `kron up` started and exits 0. A Temporal that
lost a port while starting is started again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kron_testing.kron_up import KronUp
from kron_testing.temporal_server import port_losing_temporal


def _kron(env: dict[str, str], *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kron.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def kron_up(tmp_path: Path) -> Iterator[KronUp]:
    with KronUp(tmp_path) as up:
        yield up


def test_kron_up_runs_a_demo_task_end_to_end_and_stops_everything_on_sigint(
    kron_up: KronUp, tmp_path: Path
) -> None:
    up, env, gateway = kron_up, kron_up.env, kron_up.gateway_url
    assert "OFFLINE DEMO" in up.output
    assert f"API          {gateway}   (docs: {gateway}/docs)" in up.output
    state = json.loads((tmp_path / "data" / "up.json").read_text())
    assert state["gateway_url"] == gateway and state["demo"] is True

    # The gateway is found through up.json (KRON_DATA_DIR); a token comes from its /auth/token.
    run = _kron(env, "run", "count the words of this goal", "--toolkit", "demo", "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    task_id = re.search(r"task (\S+) dispatched", run.stderr).group(1)  # type: ignore[union-attr]
    for step in ("model kron-demo-offline", "tool  DEMO_WORD_COUNT", "tool  DEMO_REVERSE_TEXT",
                 "tool  DEMO_SUM_NUMBERS"):
        assert step in run.stdout, run.stdout
    assert "completed · 3 turns" in run.stdout
    assert '{"words": 6, "characters": 28}' in run.stdout
    assert run.stdout.index("DEMO_WORD_COUNT") < run.stdout.index("completed ·")

    tasks = _kron(env, "--gateway", gateway, "--json", "tasks")
    assert tasks.returncode == 0, tasks.stderr
    assert [t["task_id"] for t in json.loads(tasks.stdout)["tasks"]] == [task_id]
    task = _kron(env, "task", task_id, "--json")
    detail = json.loads(task.stdout)
    assert (detail["status"], detail["toolkits"], len(detail["steps"])) == ("completed", ["demo"], 6)
    assert "Traceback" not in task.stderr

    refused = _kron(env, "run", "x", "--toolkit", "github")  # the demo's preflight knows only `demo`
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: toolkit_unavailable: ")
    missing = _kron(env, "task", "run-nope")
    assert (missing.returncode, missing.stderr) == (1, "error: not_found: No such task\n")

    assert up.process is not None
    children = _children(up.process.pid)
    assert children == set(state["children"].values())
    assert len(children) == 4
    started = time.monotonic()
    assert up.stop(timeout=45) == 0, up.output
    stopping = time.monotonic() - started
    assert [pid for pid in children if _alive(pid)] == []
    for name in ("gateway", "worker", "scheduler", "temporal"):
        assert f"  {name}: stopped (exit 0)" in up.output, up.output
    assert not (tmp_path / "data" / "up.json").exists()
    assert stopping < 30, stopping


def test_kron_up_starts_temporal_again_when_it_lost_a_port_while_starting(tmp_path: Path) -> None:
    # Temporal picks its internal ports itself; another process can bind one first (CI saw it).
    temporal = port_losing_temporal(tmp_path, starts_lost=1)
    with KronUp(tmp_path, {"KRON_TEMPORAL_BIN": str(temporal)}) as up:
        assert "Temporal lost a port to another process while starting; starting it again" in up.output
        assert (tmp_path / "start-dev-count").read_text().strip() == "2"
        assert up.stop() == 0, up.output
