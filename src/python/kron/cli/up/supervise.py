"""The processes of a running `kron up`: start them in order, wait until each is ready, watch them,
and stop them in order on a signal (or when one exits on its own).

Children run in their own sessions (a terminal's Ctrl-C reaches only this process, which then stops
them in order) and get SIGTERM from the kernel if this process dies without cleaning up (Linux).
Only processes started here are ever signalled.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import httpx

from kron.cli.config import STATE_FILE, write_private_json
from kron.cli.up.banner import banner, mode_line
from kron.cli.up.plan import Mode, Service
from kron.cli.up.ports import HOST, Ports
from kron.cli.up.temporal import TEMPORAL_START_ATTEMPTS, lost_port_race, temporal_healthy


def is_error_line(line: str) -> bool:
    return "level=ERROR" in line or line.startswith(("Error:", "error:", "panic:", "Traceback"))


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGTERM the child when this process dies (Linux), so a
    SIGKILLed `kron up` leaves nothing behind. prctl is looked up here, not in the child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return set_pdeathsig


@dataclass
class Child:
    service: Service
    process: subprocess.Popen[bytes]
    log_path: Path
    ready: threading.Event = field(default_factory=threading.Event)
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=30))
    # Error lines kept apart: a Go panic's stack trace pushes the error that caused it out of the tail.
    errors: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=5))
    pump: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.service.name

    def last_lines(self) -> str:
        earlier = [line for line in self.errors if line not in self.tail]
        shown = [*earlier, "..."] if earlier else []
        return "\n".join(f"  | {line}" for line in [*shown, *self.tail])

    def finished_output(self) -> None:
        """Wait until the pump has read all a finished process wrote."""
        if self.pump is not None:
            self.pump.join(timeout=2)


class Stack:
    """The processes `kron up` started; it only ever signals those."""

    def __init__(self, logs_dir: Path, out: TextIO, *, echo_logs: bool) -> None:
        self.logs_dir = logs_dir
        self.out = out
        self.echo_logs = echo_logs
        self.children: dict[str, Child] = {}
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self._out_lock = threading.Lock()
        self._preexec = _parent_death_signal()

    def say(self, text: str) -> None:
        with self._out_lock:
            print(text, file=self.out, flush=True)

    def on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()
        self.stop_requested.set()

    def start(self, service: Service) -> Child:
        log_path = self.logs_dir / f"{service.name}.log"
        with open(log_path, "ab") as log:
            log.write(f"\n--- kron up: starting {service.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(service.argv)}\n".encode())
        process = subprocess.Popen(
            service.argv,
            env=service.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._preexec,  # only calls an already-resolved prctl
        )
        child = Child(service, process, log_path)
        child.pump = threading.Thread(target=self._pump, args=(child,), name=f"pump-{service.name}", daemon=True)
        child.pump.start()
        self.children[service.name] = child
        return child

    def _pump(self, child: Child) -> None:
        stream: IO[bytes] | None = child.process.stdout
        assert stream is not None
        with open(child.log_path, "ab") as log:
            for raw in stream:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip()
                child.tail.append(line)
                if is_error_line(line):
                    child.errors.append(line)
                marker = child.service.ready_marker
                if marker is not None and marker in line:
                    child.ready.set()
                if self.echo_logs:
                    self.say(f"[{child.name}] {line}")

    def start_temporal(self, temporal: Service, ready: Callable[[], bool], deadline: float) -> None:
        """Start Temporal and wait until it is healthy, starting it again (up to
        TEMPORAL_START_ATTEMPTS times) if it lost one of its ports to another process."""
        for attempt in range(1, TEMPORAL_START_ATTEMPTS + 1):
            child = self.start(temporal)
            try:
                _wait_until(self, deadline, ready, "Temporal")
                return
            except _StartupFailed:
                if child.process.poll() is None or attempt == TEMPORAL_START_ATTEMPTS:
                    raise
                child.finished_output()
                if not lost_port_race("\n".join(child.errors)):
                    raise
                self.say("kron up: Temporal lost a port to another process while starting; starting it again")

    def exited(self) -> Child | None:
        """A child that exited on its own (not asked to)."""
        for child in self.children.values():
            if child.process.poll() is not None:
                return child
        return None

    def stop(self, names: Sequence[str], timeout: float) -> None:
        """SIGTERM these children together, wait up to `timeout` (less after a second signal), then
        SIGKILL their process groups."""
        targets = [self.children[n] for n in names if n in self.children]
        for child in targets:
            if child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
        started = time.monotonic()
        for child in targets:
            while child.process.poll() is None:
                if self.hurry.is_set() or time.monotonic() - started > timeout:
                    _signal_group(child.process, signal.SIGKILL)
                    child.process.wait()
                    self.say(f"  {child.name}: killed (did not stop in time)")
                    break
                time.sleep(0.05)
            else:
                self.say(f"  {child.name}: stopped (exit {child.process.returncode})")
            if child.pump is not None:
                child.pump.join(timeout=2)

    def stop_all(self, drain_seconds: float) -> None:
        self.stop(["gateway"], 20.0)
        self.stop(["worker", "scheduler"], drain_seconds + 20.0)
        self.stop(["temporal"], 20.0)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each child leads its own session and process group (start_new_session): signal the group, so
    # anything it started goes too. Only our own children's groups are ever signalled.
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass


def _gateway_ready(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/readyz", timeout=3.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class _StartupFailed(Exception):
    pass


def _wait_until(stack: Stack, deadline: float, ready: Callable[[], bool], what: str) -> None:
    while not ready():
        if stack.stop_requested.is_set():
            raise _StartupFailed("interrupted")
        died = stack.exited()
        if died is not None:
            raise _StartupFailed(f"{died.name} exited with code {died.process.returncode} while starting "
                                 f"(log: {died.log_path}):\n{died.last_lines()}")
        if time.monotonic() > deadline:
            raise _StartupFailed(f"{what} not ready in time (logs: {stack.logs_dir})")
        time.sleep(0.1)


def supervise(
    services: Sequence[Service], ports: Ports, mode: Mode, *, directory: Path, logs_dir: Path, launch: str,
    prog: str, echo_logs: bool, startup_timeout: float, drain_seconds: float, out: TextIO, err: TextIO,
) -> int:
    """Run the planned services (Temporal first) until a signal or until one exits on its own; then
    stop them all. Writes the state file (`up.json`) while everything is up. Returns the exit code."""
    stack = Stack(logs_dir, out, echo_logs=echo_logs)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stack.on_signal) for sig in handled}
    gateway_url = f"http://{HOST}:{ports.gateway}"
    state_path = directory / STATE_FILE
    started = time.monotonic()
    deadline = started + startup_timeout
    code = 0
    stack.say(mode_line(mode))
    stack.say(f"kron up: starting Temporal, worker, scheduler, gateway ({launch}; data in {directory})...")
    try:
        temporal, *deployables = services
        address = f"{HOST}:{ports.temporal}"
        stack.start_temporal(temporal, lambda: temporal_healthy(temporal.argv[0], address), deadline)
        for service in deployables:
            stack.start(service)
        for service in deployables:
            child = stack.children[service.name]
            _wait_until(stack, deadline, child.ready.is_set, service.name)
        _wait_until(stack, deadline, lambda: _gateway_ready(gateway_url), "gateway (/readyz)")
        pids = {name: child.process.pid for name, child in stack.children.items()}
        write_private_json(state_path, {
            "pid": os.getpid(), "gateway_url": gateway_url, "temporal_address": address,
            "ui_url": f"http://{HOST}:{ports.ui}" if ports.ui else None, "demo": mode.demo,
            "launch": launch, "children": pids,
        })
        stack.say(banner(ports, directory, mode, time.monotonic() - started, pids, prog))
        while not stack.stop_requested.wait(0.25):
            died = stack.exited()
            if died is not None:
                print(f"error: process_exited: {died.name} exited with code {died.process.returncode} "
                      f"(log: {died.log_path}):\n{died.last_lines()}", file=err, flush=True)
                code = 1
                break
    except _StartupFailed as failed:
        if str(failed) != "interrupted":
            print(f"error: startup_failed: {failed}", file=err, flush=True)
            code = 1
    finally:
        stack.say("kron up: stopping (Ctrl-C again to stop at once)...")
        stopping = time.monotonic()
        stack.stop_all(drain_seconds)
        try:
            state_path.unlink()
        except FileNotFoundError:
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    took = f"in {time.monotonic() - stopping:.1f} s"
    stack.say(f"kron up: stopped {took}" if code == 0 else f"kron up: stopped {took} after an error")
    return code
