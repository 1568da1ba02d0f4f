"""RTP sessions on loopback: exchange, statistics, RTCP, latching, timeout, close."""
from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest
from aiortc.rtp import RtcpRrPacket

from gateway.media import rtp as rtp_mod
from gateway.media.ports import PortAllocator
from gateway.media.rtp import RtpSession, open_rtp_session, parse_rtp_header
from tests.conftest import run_for, wait

LOOP = "127.0.0.1"


def _free_base(n: int = 16) -> int:
    for _ in range(50):
        base = random.randrange(40000, 60000, 2)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((LOOP, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range found")


@pytest.fixture
def alloc():
    base = _free_base()
    return PortAllocator(base, base + 15)


@pytest.fixture
def pair(alloc):
    a = open_rtp_session(alloc, LOOP)
    b = open_rtp_session(alloc, LOOP)
    a.set_remote(LOOP, b.local_port)
    b.set_remote(LOOP, a.local_port)
    yield a, b
    wait(a.close())
    wait(b.close())
    assert alloc.in_use == 0


@pytest.fixture
def raw():
    socks = []

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOP, 0))
        s.setblocking(False)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


def rtp_bytes(seq: int, ts: int, ssrc: int, payload: bytes = b"x" * 160, pt: int = 0,
              marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def collect(session: RtpSession) -> list[tuple]:
    got: list[tuple] = []
    session.on_packet = lambda *args: got.append(args)
    return got


class DropEvery:
    """Wraps a session's socket to lose chosen outgoing datagrams (a lossy network)."""

    def __init__(self, sock, lose):
        self.sock, self.lose, self.n = sock, lose, 0

    def sendto(self, data, addr):
        k = self.n
        self.n += 1
        if self.lose(k):
            return len(data)
        return self.sock.sendto(data, addr)


def test_two_sessions_exchange_audio(pair):
    a, b = pair
    got = collect(b)
    for k in range(20):
        a.send(bytes([k]) * 160, pt=0, timestamp_step=160, marker=(k == 0))
    run_for(0.2)
    assert len(got) == 20
    pts = {g[0] for g in got}
    assert pts == {0}
    assert [g[4][0] for g in got] == list(range(20))
    assert got[0][3] is True and not any(g[3] for g in got[1:])
    assert {g[5] for g in got} == {a.ssrc}
    seqs = [g[1] for g in got]
    assert all((s2 - s1) & 0xFFFF == 1 for s1, s2 in zip(seqs, seqs[1:]))
    st = b.stats
    assert st.packets_received == 20 and st.octets_received == 20 * 160
    assert st.packets_lost == 0
    assert a.stats.packets_sent == 20 and a.stats.octets_sent == 3200
    assert b.remote_ssrc == a.ssrc


def test_our_seq_and_timestamp_are_continuous_whatever_we_send(pair):
    a, b = pair
    got = collect(b)
    steps = [160, 160, 320, 160, 480, 160]  # e.g. the mixed source changes
    for k, step in enumerate(steps):
        a.send(b"p" * (10 + k), pt=9 if k % 2 else 0, timestamp_step=step)
    run_for(0.2)
    assert len(got) == len(steps)
    ts = [g[2] for g in got]
    assert [(t2 - t1) & 0xFFFFFFFF for t1, t2 in zip(ts, ts[1:])] == steps[:-1]
    seqs = [g[1] for g in got]
    assert [(s2 - s1) & 0xFFFF for s1, s2 in zip(seqs, seqs[1:])] == [1] * (len(steps) - 1)
    assert {g[5] for g in got} == {a.ssrc}


def test_loss_rtt_and_fraction_lost_through_rtcp(pair):
    a, b = pair
    a._sock = DropEvery(a._sock, lambda k: k % 10 == 5)  # 10 % loss on the wire
    for _ in range(100):
        a.send(b"\x00" * 160, pt=0, timestamp_step=160)
    run_for(0.2)
    assert b.stats.packets_received == 90
    assert b.stats.packets_lost == 10
    a.send_rtcp_now()  # SR (a has sent)
    run_for(0.1)
    b.send_rtcp_now()  # RR with LSR/DLSR and the loss report
    run_for(0.1)
    assert b.stats.fraction_lost == pytest.approx(0.1)
    st = a.stats
    assert st.remote_fraction_lost == pytest.approx(0.1, abs=0.005)
    assert st.remote_packets_lost == 10
    assert st.rtt_ms is not None and 0 <= st.rtt_ms < 50
    assert st.remote_jitter_ms is not None and st.remote_jitter_ms >= 0
    assert b.stats.rtcp_received >= 1 and a.stats.rtcp_received >= 1


def test_sequence_gaps_count_as_loss_and_wrap_is_followed():
    s = RtpSession(None, 0)
    s.symmetric = False
    got = collect(s)
    src = ("127.0.0.1", 4000)
    seqs = [65530, 65531, 65533, 65534, 65535, 0, 1, 3, 4]  # 65532 and 2 lost, wrap in between
    for k, q in enumerate(seqs):
        s.datagramReceived(rtp_bytes(q, 1000 + 160 * k, 77), src)
    assert len(got) == len(seqs)
    assert s.stats.packets_lost == 2
    s.datagramReceived(rtp_bytes(2, 1000, 77), src)  # late arrival of a "lost" one
    assert s.stats.packets_lost == 1 and s.stats.out_of_order == 1
    s.datagramReceived(rtp_bytes(3, 1000, 77), src)  # duplicate
    assert s.stats.duplicates == 1 and len(got) == len(seqs) + 1


def test_jitter_grows_when_arrivals_are_irregular(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(rtp_mod, "_monotonic", lambda: clock[0])
    regular = RtpSession(None, 0)
    irregular = RtpSession(None, 0)
    regular.symmetric = irregular.symmetric = False
    rng = random.Random(3)
    for k in range(300):
        clock[0] = 1000.0 + k * 0.02
        regular.datagramReceived(rtp_bytes(k, k * 160, 5), ("127.0.0.1", 1))
        clock[0] += rng.uniform(0, 0.04)
        irregular.datagramReceived(rtp_bytes(k, k * 160, 5), ("127.0.0.1", 1))
    assert regular.stats.jitter_ms < 0.01
    # uniform 0..40 ms delay: mean |D| is ~13 ms
    assert 8 < irregular.stats.jitter_ms < 20


def test_symmetric_rtp_latches_to_actual_source(alloc, raw):
    b = open_rtp_session(alloc, LOOP)
    try:
        b.set_remote(LOOP, 9)  # what SDP said (e.g. a private address behind NAT)
        got = collect(b)
        nat = raw()
        for k in range(5):
            nat.sendto(rtp_bytes(100 + k, 160 * k, 0xABC), (LOOP, b.local_port))
        run_for(0.15)
        assert b.remote == nat.getsockname()
        assert b.remote_rtcp == (LOOP, nat.getsockname()[1] + 1)
        assert b.stats.latches == 1
        assert [g[1] for g in got] == [102, 103, 104]  # from the Nth packet on
        b.send(b"back", pt=0, timestamp_step=160)
        run_for(0.1)
        data = nat.recv(2048)
        assert parse_rtp_header(data).ssrc == b.ssrc and data.endswith(b"back")
    finally:
        wait(b.close())


def test_stray_packets_do_not_hijack(alloc, raw):
    b = open_rtp_session(alloc, LOOP)
    try:
        legit, stray = raw(), raw()
        b.set_remote(*legit.getsockname())
        got = collect(b)
        for k in range(30):
            legit.sendto(rtp_bytes(k, 160 * k, 1), (LOOP, b.local_port))
            if k % 2 == 0:  # a stray stream interleaved with the real one
                stray.sendto(rtp_bytes(5000 + k, 0, 2), (LOOP, b.local_port))
            run_for(0.005)
        run_for(0.1)
        assert b.remote == legit.getsockname()
        assert b.stats.latches == 0
        assert b.stats.foreign_packets == 15
        assert {g[5] for g in got} == {1} and len(got) == 30
    finally:
        wait(b.close())


def test_media_timeout_fires_once(alloc, raw):
    s = open_rtp_session(alloc, LOOP, timeout=0.6)  # longer than a machine's pause (this sender pauses with us)
    fired = []
    s.on_timeout = lambda: fired.append(1)
    try:
        src = raw()
        for k in range(8):  # media keeps it alive for 0.4 s
            src.sendto(rtp_bytes(k, 160 * k, 9), (LOOP, s.local_port))
            run_for(0.05)
        assert fired == []
        run_for(1.0)
        assert fired == [1]
        run_for(0.4)
        assert fired == [1]
    finally:
        wait(s.close())


def test_a_stalled_process_does_not_time_out_a_session_whose_packets_kept_coming(alloc, raw):
    """After the event loop was blocked longer than the timeout, the packets that queued
    up meanwhile count: a VM pause must not hang up a call whose far end kept sending."""
    s = open_rtp_session(alloc, LOOP, timeout=0.3)
    fired = []
    s.on_timeout = lambda: fired.append(1)
    src = raw()
    sending = threading.Event()
    sending.set()

    def far_end():  # another machine: it goes on sending while we are frozen
        k = 0
        while sending.is_set():
            src.sendto(rtp_bytes(k, 160 * k, 9), (LOOP, s.local_port))
            k += 1
            time.sleep(0.02)

    t = threading.Thread(target=far_end, daemon=True)
    t.start()
    try:
        run_for(0.1)
        time.sleep(0.5)  # the whole event loop blocked for longer than the timeout
        run_for(0.2)
        assert fired == [], "timed out although RTP kept arriving"
        sending.clear()
        t.join()
        run_for(0.6)
        assert fired == [1], "no timeout after the far end really stopped"
    finally:
        sending.clear()
        wait(s.close())


def test_bad_packets_are_counted_not_raised(alloc, raw):
    s = open_rtp_session(alloc, LOOP)
    try:
        src = raw()
        s.set_remote(*src.getsockname())
        got = collect(s)
        bad = [
            b"\x80",  # too short
            b"\x80\x00" + b"\x00" * 5,  # too short
            bytes([0x40, 0]) + b"\x00" * 30,  # version 1
            bytes([0x00]) * 40,  # version 0
            bytes([0x8F, 0]) + b"\x00" * 20,  # 15 CSRCs announced, packet too short
            bytes([0x90, 0]) + b"\x00" * 10,  # extension bit, no extension header
            bytes([0x90, 0]) + b"\x00" * 12 + b"\xbe\xde\x00\x10",  # extension longer than packet
            bytes([0xA0, 0]) + b"\x00" * 20 + b"\x00",  # padding count 0
            bytes([0xA0, 0]) + b"\x00" * 20 + b"\xff",  # padding longer than packet
        ]
        for d in bad:
            src.sendto(d, (LOOP, s.local_port))
        rng = random.Random(5)
        garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(50)]
        for d in garbage:
            src.sendto(d, (LOOP, s.local_port))
            src.sendto(d, (LOOP, s.local_port + 1))  # and at the RTCP port
        run_for(0.2)
        assert s.stats.bad_packets >= len(bad)
        assert s.stats.bad_packets + s.stats.bad_rtcp + len(got) + s.stats.duplicates \
            + s.stats.rtcp_received >= len(bad) + 50
        assert s.stats.bad_rtcp >= 40
        # the session still works afterwards
        src.sendto(rtp_bytes(7, 7, 0x1234), (LOOP, s.local_port))
        run_for(0.05)
        assert got and got[-1][5] == 0x1234
    finally:
        wait(s.close())


def test_rtcp_multiplexed_on_rtp_port_is_not_media(alloc, raw):
    s = open_rtp_session(alloc, LOOP)
    try:
        src = raw()
        s.set_remote(*src.getsockname())
        got = collect(s)
        src.sendto(bytes(RtcpRrPacket(ssrc=42)), (LOOP, s.local_port))
        run_for(0.1)
        assert got == []
        assert s.stats.rtcp_received == 1 and s.stats.bad_packets == 0
    finally:
        wait(s.close())


def test_keyframe_requests_and_bye_reach_the_far_end(pair):
    a, b = pair
    fb = []
    a.on_rtcp_feedback = lambda kind, detail: fb.append(kind)
    byes = []
    b.on_bye = lambda: byes.append(1)
    a.send(b"v", pt=96, timestamp_step=3000)
    run_for(0.1)
    b.send_pli()
    b.send_fir()
    run_for(0.1)
    assert fb == ["pli", "fir"]
    b.send(b"v", pt=96, timestamp_step=3000)
    run_for(0.05)
    wait(a.close())
    run_for(0.1)
    assert byes == [1]


def test_close_releases_ports_and_is_idempotent(alloc):
    sessions = [open_rtp_session(alloc, LOOP) for _ in range(4)]
    assert alloc.in_use == 4
    ports = [s.local_port for s in sessions]
    for s in sessions:
        wait(s.close())
        wait(s.close())
    assert alloc.in_use == 0
    # the sockets are really gone: the ports can be bound again
    for p in ports:
        for q in (p, p + 1):
            t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t.bind((LOOP, q))
            t.close()


def test_set_remote_refuses_hostnames(alloc):
    s = open_rtp_session(alloc, LOOP)
    try:
        with pytest.raises(ValueError, match="not an IP address"):
            s.set_remote("example.org", 5004)
        with pytest.raises(ValueError, match="IPv6"):
            s.set_remote("::1", 5004)
    finally:
        wait(s.close())


def test_read_pending_takes_queued_datagrams_without_the_event_loop(pair, raw):
    # what a late media tick relies on: packets that queued while the loop was busy
    # are in the jitter buffers before the tick mixes
    a, b = pair
    got = []
    a.on_packet = lambda pt, seq, ts, marker, payload, ssrc, arrival: got.append(seq)
    s = raw()
    a.set_remote(LOOP, s.getsockname()[1])  # the signalled peer (no latching involved)
    for seq in range(5):
        s.sendto(rtp_bytes(seq, seq * 160, 0xABCD), (LOOP, a.local_port))
    time.sleep(0.01)  # the loop does not run: the datagrams wait in the socket
    assert got == []
    rtp_mod.read_pending()
    assert got == [0, 1, 2, 3, 4]
