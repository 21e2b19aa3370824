"""The ports tests give their servers: no outgoing connection can take one between the pick and the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stevedore_server.kit.loopback import free_ports

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="Linux says its ephemeral range in /proc")
def test_ports_lie_below_the_range_outgoing_connections_take_theirs_from() -> None:
    low = int(RANGE.read_text().split()[0])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        outgoing = socket.create_connection(listener.getsockname())
        with outgoing:
            assert outgoing.getsockname()[1] >= low  # the kernel's pick for a connection
    assert all(port < low for port in free_ports(50))


def test_a_port_is_handed_out_once_and_bindable_on_every_address() -> None:
    first, second = free_ports(100), free_ports(100)
    assert len(set(first) | set(second)) == 200
    for port in first[:10]:
        with socket.create_server(("", port)):
            pass
