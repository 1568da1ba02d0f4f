"""RTP port-pair allocation (RFC 3550 §11) and binding around occupied ports."""
from __future__ import annotations

import random
import socket

import pytest

from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.media.rtp import open_rtp_session
from tests.conftest import wait


def test_ports_are_even_with_rtcp_pair_inside_range():
    alloc = PortAllocator(10001, 10020)  # odd low: first pair is 10002/10003
    ports = [alloc.allocate() for _ in range(alloc.capacity)]
    assert alloc.capacity == 9  # 10002..10018 (10020 has no 10021 in range)
    assert all(p % 2 == 0 and 10001 <= p and p + 1 <= 10020 for p in ports)
    assert len(set(ports)) == len(ports)
    assert alloc.in_use == alloc.capacity


def test_exhaustion_error_names_the_range():
    alloc = PortAllocator(20000, 20003)
    alloc.allocate()
    alloc.allocate()
    with pytest.raises(PortsExhausted) as err:
        alloc.allocate()
    assert "20000..20003" in str(err.value)
    assert "2 pairs" in str(err.value)


def test_release_makes_port_reusable_and_is_idempotent():
    alloc = PortAllocator(20000, 20001)
    p = alloc.allocate()
    with pytest.raises(PortsExhausted):
        alloc.allocate()
    alloc.release(p)
    alloc.release(p)  # idempotent
    alloc.release(12345)  # unknown: ignored
    assert alloc.in_use == 0
    assert alloc.allocate() == p


def test_released_port_goes_to_the_back_of_the_queue():
    alloc = PortAllocator(20000, 20009)
    a = alloc.allocate()
    alloc.release(a)
    assert alloc.allocate() != a


def test_no_leak_after_many_cycles():
    alloc = PortAllocator(30000, 30099)
    rng = random.Random(1)
    held: list[int] = []
    for _ in range(5000):
        if held and (rng.random() < 0.5 or len(held) == alloc.capacity):
            alloc.release(held.pop(rng.randrange(len(held))))
        else:
            held.append(alloc.allocate())
    assert alloc.in_use == len(held)
    for p in held:
        alloc.release(p)
    assert alloc.in_use == 0
    assert len({alloc.allocate() for _ in range(alloc.capacity)}) == alloc.capacity


@pytest.mark.parametrize("low,high", [(5000, 4000), (0, 10), (7, 7), (65535, 65535)])
def test_bad_ranges_are_refused_with_a_reason(low, high):
    with pytest.raises(ValueError) as err:
        PortAllocator(low, high)
    assert str(low) in str(err.value)


def _free_base() -> int:
    """An even base port whose next few pairs are free right now."""
    for _ in range(50):
        base = random.randrange(40000, 60000, 2)
        socks = []
        try:
            for p in range(base, base + 8):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range found")


@pytest.mark.parametrize("occupied_offset", [0, 1])
def test_occupied_port_is_skipped_and_not_leaked(occupied_offset):
    base = _free_base()
    alloc = PortAllocator(base, base + 7)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", base + occupied_offset))  # RTP (0) or RTCP (1) port
    try:
        session = open_rtp_session(alloc, bind="127.0.0.1")
        assert session.local_port == base + 2
        assert alloc.in_use == 1
        wait(session.close())
        assert alloc.in_use == 0
    finally:
        blocker.close()


def test_every_pair_occupied_raises_and_leaks_nothing():
    base = _free_base()
    alloc = PortAllocator(base, base + 3)
    blockers = []
    for p in (base, base + 2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", p))
        blockers.append(s)
    try:
        with pytest.raises(PortsExhausted) as err:
            open_rtp_session(alloc)
        assert f"{base}..{base + 3}" in str(err.value)
        assert alloc.in_use == 0
    finally:
        for s in blockers:
            s.close()
