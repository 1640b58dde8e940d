"""Loopback ports for the local stack: are the chosen ones free, and a free one to pick."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

from kron.cli.api import CliError

HOST = "127.0.0.1"


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
