from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kron.cli.api import CliError
from kron.cli.up.ports import Ports, check_ports, free_port


def test_ports_in_use_or_given_twice_are_refused() -> None:
    free = [free_port() for _ in range(6)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free[0]))
        taken.listen()
        with pytest.raises(CliError, match=r"\(gateway \(--port\)\) is in use") as in_use:
            check_ports(Ports(*free))
    assert in_use.value.error == "port_in_use"
    with pytest.raises(CliError, match="both"):
        check_ports(Ports(free[1], free[1], 0, free[2], free[3], free[4]))


def test_free_ports_come_from_below_the_kernels_ephemeral_range() -> None:
    # The kernel hands out ephemeral ports itself (Temporal's internal listeners, outgoing
    # connections): a port picked below that range is not one of those.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(low // 2 <= port < low for port in ports), ports
    assert len(ports) > 10  # picked at random, not the same one each time
    for port in ports:  # bindable as servers bind (SO_REUSEADDR: another test's TIME_WAIT is no obstacle)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
