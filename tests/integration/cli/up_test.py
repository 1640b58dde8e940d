"""`kron up` from sources, then the real CLI against it: a demo run end to end, the listing and the
task, and a Ctrl-C (SIGINT) that stops every process `kron up` started and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kron_testing.temporal_server import free_port

UP_TIMEOUT = 60.0


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_API_KEY", "COMPOSIO_API_KEY", "KRON_GATEWAY_URL", "KRON_TOKEN")}
    env.update({
        # The children see exactly the modules this interpreter sees.
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "PYTHONUNBUFFERED": "1",
        "KRON_CONFIG_DIR": str(tmp_path / "config"),
        "KRON_DATA_DIR": str(tmp_path / "data"),
        "KRON_USER": "cli-test",
        "KRON_UP_LAUNCH": "source",
    })
    return env


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


class Up:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.up = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("kron is up"):
                self.up.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def kron_up(tmp_path: Path) -> Iterator[tuple[Up, dict[str, str], int]]:
    env = _env(tmp_path)
    gateway_port = free_port()
    ports = ["--port", str(gateway_port), "--temporal-port", str(free_port()), "--ui-port", str(free_port()),
             "--worker-metrics-port", str(free_port()), "--scheduler-metrics-port", str(free_port())]
    process = subprocess.Popen(
        [sys.executable, "-m", "kron.cli.main", "up", "--data-dir", str(tmp_path / "data"),
         "--drain-seconds", "5", *ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )
    up = Up(process)
    try:
        deadline = time.monotonic() + UP_TIMEOUT
        while not up.up.wait(0.2):
            assert process.poll() is None, f"kron up exited {process.returncode}:\n{up.output}"
            assert time.monotonic() < deadline, f"kron up not up in {UP_TIMEOUT} s:\n{up.output}"
        yield up, env, gateway_port
    finally:
        if process.poll() is None:  # the test failed before its SIGINT: stop what this test started
            state = tmp_path / "data" / "up.json"
            pids = json.loads(state.read_text())["children"].values() if state.exists() else []
            process.kill()
            process.wait()
            for pid in pids:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


def test_kron_up_runs_a_demo_task_end_to_end_and_stops_everything_on_sigint(
    kron_up: tuple[Up, dict[str, str], int], tmp_path: Path
) -> None:
    up, env, gateway_port = kron_up
    gateway = f"http://127.0.0.1:{gateway_port}"
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

    children = _children(up.process.pid)
    assert children == set(state["children"].values())
    assert len(children) == 4
    started = time.monotonic()
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=45) == 0, up.output
    stopping = time.monotonic() - started
    assert [pid for pid in children if _alive(pid)] == []
    for name in ("gateway", "worker", "scheduler", "temporal"):
        assert f"  {name}: stopped (exit 0)" in up.output, up.output
    assert not (tmp_path / "data" / "up.json").exists()
    assert stopping < 30, stopping
