"""Start kron's own entry points as subprocesses, the way they run in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType


class KronProcess:
    """A `python -m <module>` child that announces readiness with a line on stdout."""

    def __init__(self, module: str, env: Mapping[str, str], ready_marker: str) -> None:
        self.module = module
        self.ready_marker = ready_marker
        full_env = dict(os.environ)
        full_env.update(env)
        # The child sees exactly the modules this interpreter sees (pants test sandbox or a venv).
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", module],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if self.ready_marker in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> KronProcess:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.module} not ready (exit={self.process.poll()}):\n"
                    + "\n".join(self.output[-40:])
                )
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no drain."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM: a graceful drain; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def __enter__(self) -> KronProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
