"""`kron up` from sources as a child of a test: every port free and on loopback, its data in the
test's tmp dir, no API keys inherited unless the test passes them. The test stops it (SIGINT, as
Ctrl-C would); whatever is left is killed by PID, from the state file `kron up` wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from kron_testing.temporal_server import free_port

UP_TIMEOUT = 60.0
# Never inherited from the developer's shell: a test decides what kron up sees.
_NOT_INHERITED = ("ANTHROPIC_API_KEY", "COMPOSIO_API_KEY", "ANTHROPIC_BASE_URL", "COMPOSIO_BASE_URL",
                  "KRON_GATEWAY_URL", "KRON_TOKEN")


def kron_env(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for `kron` commands (and `kron up`) in a test."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update({
        # The children see exactly the modules this interpreter sees.
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "PYTHONUNBUFFERED": "1",
        "KRON_CONFIG_DIR": str(tmp_path / "config"),
        "KRON_DATA_DIR": str(tmp_path / "data"),
        "KRON_USER": "cli-test",
        "KRON_UP_LAUNCH": "source",
    })
    env.update(extra or {})
    return env


class KronUp:
    def __init__(
        self, tmp_path: Path, env: Mapping[str, str] | None = None, *extra_args: str, drain_seconds: float = 5.0
    ) -> None:
        self.data_dir = tmp_path / "data"
        self.env = kron_env(tmp_path, env)
        self.ports = {name: free_port() for name in (
            "port", "temporal-port", "ui-port", "worker-metrics-port", "scheduler-metrics-port",
            "temporal-metrics-port")}
        self.argv = [sys.executable, "-m", "kron.cli.main", "up", "--data-dir", str(self.data_dir),
                     "--drain-seconds", f"{drain_seconds:g}", *extra_args]
        for flag, port in self.ports.items():
            self.argv += [f"--{flag}", str(port)]
        self.lines: list[str] = []
        self.up = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    def metrics_target(self, name: str) -> str:
        """host:port of a /metrics endpoint: gateway, worker, scheduler or temporal."""
        port = self.ports["port" if name == "gateway" else f"{name}-metrics-port"]
        return f"127.0.0.1:{port}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def start(self, timeout: float = UP_TIMEOUT) -> Self:
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.up.wait(0.2):
            if self.process.poll() is not None:
                raise RuntimeError(f"kron up exited {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"kron up not up in {timeout} s:\n{self.output}")
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("kron is up"):
                self.up.set()

    def children(self) -> dict[str, int]:
        state = self.data_dir / "up.json"
        return dict(json.loads(state.read_text())["children"]) if state.exists() else {}

    def stop(self, timeout: float = 45.0) -> int:
        """Ctrl-C: SIGINT, then wait for kron up to stop everything; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Stop it; if it does not stop, kill it and the children it started."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = list(self.children().values())
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            for pid in pids:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
