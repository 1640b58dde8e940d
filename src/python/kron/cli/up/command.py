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
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TextIO

from kron.cli.api import CliError
from kron.cli.config import data_dir
from kron.cli.up.plan import (
    DB_FILE,
    LAUNCH_MODES,
    LOGS_DIR,
    PEX_PATHS,
    decide_mode,
    dist_dir,
    launch_mode,
    plan,
)
from kron.cli.up.ports import Ports, check_ports, free_port
from kron.cli.up.supervise import supervise
from kron.cli.up.temporal import find_temporal_binary

UP_DESCRIPTION = __doc__ or ""


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
    parser.add_argument("--launch", choices=LAUNCH_MODES, default=None,
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
    logs_dir = directory / LOGS_DIR
    logs_dir.mkdir(exist_ok=True)
    lock = _lock(directory)
    try:
        check_ports(ports)
        services = plan(ports=ports, db_file=directory / DB_FILE, temporal_bin=temporal_bin,
                        launch=launch, dist=dist, demo=mode.demo, drain_seconds=args.drain_seconds,
                        environ=environ, dynamic_config=args.temporal_dynamic_config)
        prog = environ.get("KRON_PROG") or "kron"  # ./kron sets "./kron": the hint then works as printed
        return supervise(services, ports, mode, directory=directory, logs_dir=logs_dir, launch=launch, prog=prog,
                         echo_logs=args.logs, startup_timeout=args.startup_timeout,
                         drain_seconds=args.drain_seconds, out=out, err=err)
    finally:
        lock.close()


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
