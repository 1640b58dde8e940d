"""What `kron up` starts, decided without starting anything: the mode (live or offline demo), where
the deployables come from (PEXes or sources), and each process's command line and environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kron.cli.api import CliError
from kron.cli.up.ports import HOST, Ports
from kron.cli.up.temporal import temporal_dev_args

DEPLOYABLES = ("worker", "scheduler", "gateway")
PEX_PATHS = {name: f"src.python.kron.{name}/kron-{name}.pex" for name in DEPLOYABLES}
READY_MARKERS = {name: f"kron-{name} ready" for name in DEPLOYABLES}
LAUNCH_MODES = ("auto", "pex", "source")
# In the data directory.
DB_FILE = "temporal.sqlite"
LOGS_DIR = "logs"
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "COMPOSIO_API_KEY")
# Removed from the children's environment in demo mode (a lone key must not switch anything on).
_SECRET_VARIABLES = (*KEY_VARIABLES, "KRON_COMPOSIO_API_KEY")


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


def running_pex(environ: Mapping[str, str]) -> str | None:
    """The PEX file this CLI runs from, if any."""
    pex = environ.get("PEX")
    return pex if pex and os.path.exists(pex) else None


def launch_mode(choice: str | None, environ: Mapping[str, str]) -> str:
    mode = choice or environ.get("KRON_UP_LAUNCH") or "auto"
    if mode not in LAUNCH_MODES:
        raise CliError("usage", f"KRON_UP_LAUNCH={mode!r}: use {', '.join(LAUNCH_MODES[:-1])} or {LAUNCH_MODES[-1]}",
                       exit_code=2)
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
