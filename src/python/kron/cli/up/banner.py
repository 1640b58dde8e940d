"""What `kron up` tells its user: which mode it runs in, and where everything is once it is up."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kron.cli.up.plan import DB_FILE, LOGS_DIR, Mode
from kron.cli.up.ports import HOST, Ports


def mode_line(mode: Mode) -> str:
    if mode.demo:
        return (f"kron up: OFFLINE DEMO ({mode.reason}): the demo model (no real reasoning) and local demo "
                "tools, toolkit `demo`. Set ANTHROPIC_API_KEY and COMPOSIO_API_KEY for real runs.")
    return f"kron up: {mode.reason}: Claude and Composio."


def banner(
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
        f"  data         {directory / DB_FILE} · logs {directory / LOGS_DIR}",
        "  processes    " + ", ".join(f"{name} {pid}" for name, pid in pids.items()),
    ]
    example = (f'{prog} run "count the words of this goal" --toolkit demo --wait' if mode.demo
               else f'{prog} run "summarise my unread GitHub notifications" --toolkit github --wait')
    lines.append(f"try: {example}")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)
