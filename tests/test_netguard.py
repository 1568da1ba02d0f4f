"""TCP listener limits: a silent connection is closed, caps per source and in total."""
from __future__ import annotations

import socket
import time

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol

from gateway.netguard import GuardedFactory, tcp_budgets
from tests.conftest import run_for, wait


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.write(data)


def test_a_connection_that_says_nothing_is_closed_and_one_that_talks_stays():
    guard = GuardedFactory(Factory.forProtocol(Echo), "test", max_total=10, first_data_timeout=0.3,
                           idle_timeout=None)
    port = reactor.listenTCP(0, guard, interface="127.0.0.1")
    try:
        silent = socket.create_connection(("127.0.0.1", port.getHost().port))
        talker = socket.create_connection(("127.0.0.1", port.getHost().port))
        talker.sendall(b"hello")
        run_for(0.8)
        silent.settimeout(1)
        try:
            assert silent.recv(10) == b"", "the silent connection is still open"
        except ConnectionResetError:       # closed with a reset: the flood's sockets go at once
            pass
        talker.settimeout(1)
        assert talker.recv(10) == b"hello"
        talker.sendall(b"again")
        run_for(0.1)
        assert talker.recv(10) == b"again"
        assert guard.info()["timed_out"] == 1 and guard.info()["open"] == 1
        silent.close()
        talker.close()
        run_for(0.1)
    finally:
        wait(port.stopListening())


def test_caps_per_source_and_in_total():
    guard = GuardedFactory(Factory.forProtocol(Echo), "test", max_total=5, max_per_source=2)
    got = [guard.buildProtocol(IPv4Address("TCP", "198.51.100.7", 1000 + i)) for i in range(3)]
    assert got[0] is not None and got[1] is not None and got[2] is None
    got += [guard.buildProtocol(IPv4Address("TCP", f"198.51.100.{i}", 2000)) for i in range(20, 25)]
    assert sum(p is not None for p in got) == 5 and guard.stats["refused"] == 3
    # (the protocols were never connected: forget them as a closed connection would)
    for p in [p for p in got if p is not None]:
        guard.unregisterProtocol(p)
    assert not guard.per_source and guard.buildProtocol(IPv4Address("TCP", "198.51.100.7", 1)) is not None


def test_budgets_share_the_descriptors_and_keep_a_reserve():
    b = tcp_budgets(1024, rtp_sockets=16384)
    assert sum(b.values()) <= 1024 - 512 - 128 and min(b.values()) >= 16
    assert tcp_budgets(65536, 200)["SIP"] > 15000
