"""One RTP session (RFC 3550) per leg per media: receive, statistics, RTCP, send.

The receive path is the hot path of the media plane (a province room holds
~200 legs at 50 packets/s each), so the 12-byte fixed header is parsed with a
precompiled ``struct`` and the per-packet work is kept to a handful of
attribute updates. Values that are only needed for reports (cumulative loss,
jitter in ms) are computed when ``stats`` is read or a report is built.

RTCP packets are built and parsed with ``aiortc.rtp``'s classes.

Receiver statistics follow RFC 3550 appendix A:
  * A.1 sequence number validation with 16-bit wrap (``cycles``) and restart
    after a large jump confirmed by two sequential packets; the probation of
    new sources is skipped (the source is known from signalling).
  * A.3 expected / lost / fraction lost per report interval.
  * A.8 interarrival jitter (in RTP clock units, shown in ms).
Duplicates are detected with a 1024-entry window and are neither delivered
nor counted as received (so ``packets_lost`` cannot go negative because of
them).

Symmetric RTP (RFC 4961) / latching: with ``symmetric`` on, packets from an
address other than ``remote`` are dropped (counted in ``foreign_packets``)
until ``latch_after`` consecutive packets with one SSRC have come from one
address; then ``remote`` is moved there (logged once per latch). A stray
packet, or a stray stream interleaved with the signalled one, never latches.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from gateway.media.ports import PortAllocator, PortsExhausted

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

__all__ = [
    "RtpStats",
    "RtpSession",
    "open_rtp_session",
    "parse_rtp_header",
    "RtpHeader",
    "ntp_now",
    "read_pending",
]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEEN_WINDOW = 1024  # duplicate detection window (packets)
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
SDES_CNAME = 1

_HDR = struct.Struct("!BBHII")
_unpack_seq_ts_ssrc = struct.Struct("!HII").unpack_from
_unpack_ext_len = struct.Struct("!H").unpack_from
_monotonic = time.monotonic
_MAX_DATAGRAM = 8192  # as Twisted's UDP port

#: every started, not yet closed session (for read_pending)
_open_sessions: set["RtpSession"] = set()


def read_pending() -> None:
    """Read the datagrams already waiting on every open RTP socket, now.

    The media clock calls this before a tick that fires late: the event loop was
    busy or the process did not get the CPU, and the loop runs due timers before
    it polls the sockets, so without this the tick would find the jitter buffers
    dry although the packets are here - and they would be taken for late ones.
    """
    for session in tuple(_open_sessions):
        session._read_pending()


PacketCallback = Callable[[int, int, int, bool, bytes, int, float], None]
FeedbackCallback = Callable[[str, Any], None]


def ntp_now(wallclock: float | None = None) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for ``wallclock`` (default: now)."""
    t = time.time() if wallclock is None else wallclock
    t += NTP_EPOCH_OFFSET
    sec = int(t)
    return (sec << 32) | int((t - sec) * 4294967296.0)


def _ntp_middle(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(slots=True)
class RtpHeader:
    """The parts of an RTP header (RFC 3550 §5.1) the media plane uses."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    csrc_count: int
    payload_offset: int
    payload_end: int


def parse_rtp_header(data: bytes) -> RtpHeader:
    """Parse and validate an RTP packet; raise ValueError saying what is wrong.

    Not used on the receive hot path (which inlines the same checks), but
    handy for tools and tests.
    """
    n = len(data)
    if n < 12:
        raise ValueError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
    if b0 >> 6 != 2:
        raise ValueError(f"RTP version {b0 >> 6}, expected 2")
    offset = 12 + (b0 & 0x0F) * 4
    if b0 & 0x10:
        if offset + 4 > n:
            raise ValueError("RTP header extension header is truncated")
        offset += 4 + _unpack_ext_len(data, offset + 2)[0] * 4
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0:
            raise ValueError("RTP padding bit set but padding count is 0")
        end -= pad
    if offset > end:
        raise ValueError("RTP CSRC list / extension / padding exceed the packet length")
    return RtpHeader(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, b0 & 0x0F, offset, end)


@dataclass(slots=True)
class RtpStats:
    """What one RTP session saw and did. Read through ``RtpSession.stats``."""

    packets_received: int = 0
    octets_received: int = 0  # payload octets
    packets_sent: int = 0
    octets_sent: int = 0  # payload octets (RFC 3550 §6.4.1 sender octet count)
    packets_lost: int = 0  # cumulative, RFC 3550 A.3 (expected - received)
    fraction_lost: float = 0.0  # 0..1 over the last report interval
    jitter_ms: float = 0.0  # interarrival jitter, RFC 3550 A.8
    rtt_ms: float | None = None  # from the far end's LSR/DLSR, RFC 3550 §6.4.1
    remote_jitter_ms: float | None = None  # what the far end reports about our stream
    remote_fraction_lost: float | None = None
    remote_packets_lost: int | None = None
    duplicates: int = 0
    out_of_order: int = 0
    bad_packets: int = 0  # not RTP v2, truncated, inconsistent lengths
    bad_rtcp: int = 0
    foreign_packets: int = 0  # from an address we have not (yet) latched to
    latches: int = 0
    ssrc_changes: int = 0
    restarts: int = 0  # A.1 sequence restarts after a large jump
    rtcp_sent: int = 0
    rtcp_received: int = 0
    send_errors: int = 0
    send_dropped: int = 0  # send() before the remote address was known
    send_unconfirmed: int = 0  # not sent: the far end was not confirmed and its budget was spent
    retransmitted: int = 0  # packets sent again on the far end's NACK (RFC 4585 §6.2.1)
    nacks_sent: int = 0    # packets we asked the far end to send again
    srtp_failures: int = 0  # SRTP/SRTCP packets that failed authentication or replay checks (dropped)
    last_received: float | None = None  # time.monotonic() of the last RTP packet


class _RtcpProtocol(DatagramProtocol):
    """The RTCP port (RTP + 1): hands datagrams to its session."""

    def __init__(self, session: "RtpSession") -> None:
        self.session = session

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted)
        s = self.session
        if s.srtp is not None:
            clear = s.srtp.unprotect_rtcp(data)
            if clear is None:
                s._stats.srtp_failures += 1
                return
            data = clear
        s._rtcp_received(data, addr, muxed=False)


class RtpSession(DatagramProtocol):
    """RTP + RTCP for one media of one leg. Create with ``open_rtp_session``."""

    symmetric: bool = True
    latch_after: int = 3  # consecutive packets (same address, same SSRC) before latching
    rtcp_mux: bool = False  # send RTCP on the RTP port (RFC 5761) when negotiated
    rtcp_interval: float = 5.0  # seconds; randomised 0.5..1.5x; 0 = no periodic RTCP
    #: packets kept for retransmission on a NACK (send_at; 0: none kept)
    history: int = 0
    #: packets we send before the far end is confirmed (its RTP arrived, or the signalling says
    #: the caller is real: SIP ACK): an address named in a forged offer gets at most this much
    #: (a never-ACKed INVITE must not turn the gateway into a reflector); None: no gate
    unconfirmed_budget: int | None = None

    def __init__(
        self,
        allocator: PortAllocator | None,
        local_port: int,
        clock_rate: int = 8000,
        timeout: float = 30.0,
        reactor: Any = None,
        bind: str = "127.0.0.1",
    ) -> None:
        if clock_rate <= 0:
            raise ValueError(f"RTP clock rate must be positive, got {clock_rate}")
        if reactor is None:
            from twisted.internet import reactor as _r

            reactor = _r
        self._reactor = reactor
        self._allocator = allocator
        self.local_port = local_port
        self.bind = bind
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.ssrc: int = secrets.randbits(32)
        self.cname: str = f"{secrets.token_hex(8)}@cau"
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self.on_packet: PacketCallback | None = None
        self.on_timeout: Callable[[], None] | None = None
        self.on_rtcp_feedback: FeedbackCallback | None = None
        self.on_bye: Callable[[], None] | None = None
        self._stats = RtpStats()
        self._family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        # sending state (RFC 3550 §5.1: random initial seq and timestamp)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._last_sent_ts: int | None = None
        self._last_sent_time = 0.0
        self._sent_at_last_report = 0
        self._last_sr_ntp_middle = 0
        self._fir_seq = 0
        self._sent: dict[int, bytes] = {}   # seq % history → packet (for NACKs)
        self.confirmed = False                # see unconfirmed_budget
        #: SRTP (gateway.media.srtp.SrtpContext) once keys are agreed; None: plain RTP
        self.srtp: Any = None
        self._unconfirmed_sent = 0
        # receiving state (RFC 3550 A.1)
        self._src_ssrc: int | None = None
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit = 0.0
        self._jitter = 0.0  # RTP clock units
        self._seen: list[int] = [-1] * _SEEN_WINDOW
        self._lsr = 0  # middle 32 bits of the last SR's NTP timestamp
        self._lsr_arrival = 0.0
        # latching
        self._cand: tuple[Any, int] | None = None
        self._cand_count = 0
        # lifecycle
        self._rtp_port: Any = None
        self._rtcp_port: Any = None
        self._sock: socket.socket | None = None
        self._loop: Any = None  # asyncio loop we read the RTP socket from directly (see _start)
        self._fd = -1
        self._recvfrom: Any = None
        self._started_at = 0.0
        self._timeout_call: Any = None
        self._rtcp_call: Any = None
        self._timed_out = False
        self._closed = False

    # ------------------------------------------------------------ set-up
    def _start(self, rtp_port: Any, rtcp_port: Any) -> None:
        self._rtp_port = rtp_port
        self._rtcp_port = rtcp_port
        self._sock = rtp_port.getHandle()
        self._started_at = _monotonic()
        _open_sessions.add(self)
        # On the asyncio reactor, read the RTP socket from our own reader callback: one
        # datagram per readiness event (level-triggered: the loop calls again while more
        # wait), no EAGAIN exception per packet, none of Twisted's per-read context and
        # logging wrappers. The per-packet cost is what decides a big room's CPU.
        loop = getattr(self._reactor, "_asyncioEventloop", None)
        if loop is not None and self._sock is not None:
            rtp_port.stopReading()
            self._fd = self._sock.fileno()
            self._recvfrom = self._sock.recvfrom
            loop.add_reader(self._fd, self._read_one)
            self._loop = loop
        if self.timeout and self.timeout > 0:
            self._timeout_call = self._reactor.callLater(self.timeout, self._check_timeout)
        self._schedule_rtcp(first=True)

    def set_remote(self, host: str, rtp_port: int, rtcp_port: int | None = None) -> None:
        """Where to send media (from SDP / H.245). ``host`` must be an IP literal."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"RTP remote host {host!r} is not an IP address: resolve it before set_remote()"
            ) from None
        if (ip.version == 6) != (self._family == socket.AF_INET6):
            raise ValueError(
                f"RTP remote {host} is IPv{ip.version} but this session is bound to {self.bind}"
            )
        if not (0 < rtp_port < 65536) or (rtcp_port is not None and not 0 < rtcp_port < 65536):
            raise ValueError(f"RTP remote port {rtp_port}/{rtcp_port} out of range 1..65535")
        host = str(ip)
        self.remote = (host, rtp_port)
        if rtcp_port is None:
            rtcp_port = rtp_port if self.rtcp_mux else rtp_port + 1
        self.remote_rtcp = (host, rtcp_port)
        self._cand = None
        self._cand_count = 0

    @property
    def remote_ssrc(self) -> int | None:
        return self._src_ssrc

    @property
    def stats(self) -> RtpStats:
        st = self._stats
        if self._src_ssrc is not None:
            expected = self._cycles + self._max_seq - self._base_seq + 1
            st.packets_lost = expected - self._received
        st.jitter_ms = self._jitter * 1000.0 / self.clock_rate
        return st

    # ------------------------------------------------------------ receive (hot path)
    def _read_one(self) -> bool:
        """Read and handle one datagram; False when none was waiting."""
        try:
            data, addr = self._recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # e.g. an ICMP error queued on the socket
            self._stats.bad_packets += 1
            log.debug("RTP port %d: %s", self.local_port, exc)
            return True
        try:
            self.datagramReceived(data, addr)
        except Exception:
            log.exception("RTP port %d: handling a packet from %s failed", self.local_port, addr)
        return True

    def _read_pending(self) -> None:
        """Read every datagram waiting on the RTP socket (see ``read_pending``)."""
        if self._loop is None:
            if self._rtp_port is not None and not self._closed:
                try:
                    self._rtp_port.doRead()
                except Exception:
                    log.exception("RTP port %d: reading pending datagrams failed", self.local_port)
            return
        for _ in range(256):
            if not self._read_one():
                return

    def set_srtp(self, context: Any) -> None:
        """Protect everything sent and require protection on everything received from now on
        (``gateway.media.srtp.SrtpContext``; None: plain RTP again)."""
        self.srtp = context

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted)
        arrival = _monotonic()
        srtp = self.srtp
        if srtp is not None and len(data) >= 8:
            rtcp = 192 <= data[1] <= 223
            clear = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
            if clear is None:
                self._stats.srtp_failures += 1
                return
            if rtcp:
                self._rtcp_received(clear, addr, muxed=True)
                return
            data = clear
        n = len(data)
        if n < 12:
            if n >= 8 and data[0] & 0xC0 == 0x80 and 192 <= data[1] <= 223:
                self._rtcp_received(data, addr, muxed=True)  # e.g. an empty RR
            else:
                self._stats.bad_packets += 1
            return
        b0 = data[0]
        if b0 & 0xC0 != 0x80:
            self._stats.bad_packets += 1
            return
        b1 = data[1]
        if 192 <= b1 <= 223:  # RTCP multiplexed on the RTP port (RFC 5761 §4)
            self._rtcp_received(data, addr, muxed=True)
            return
        seq, ts, ssrc = _unpack_seq_ts_ssrc(data, 2)
        if b0 & 0x3F:  # padding, extension or CSRCs present
            offset = 12 + (b0 & 0x0F) * 4
            if b0 & 0x10:
                if offset + 4 > n:
                    self._stats.bad_packets += 1
                    return
                offset += 4 + _unpack_ext_len(data, offset + 2)[0] * 4
            end = n
            if b0 & 0x20:
                pad = data[-1]
                end -= pad
                if pad == 0:
                    self._stats.bad_packets += 1
                    return
            if offset > end:
                self._stats.bad_packets += 1
                return
            payload = data[offset:end]
        else:
            payload = data[12:]
        if addr != self.remote:
            if self.symmetric:
                if not self._latch(addr, ssrc):
                    return
        elif self._cand_count:
            self._cand_count = 0
        if not self.confirmed:
            self.confirmed = True          # its RTP came from where we send: a real peer
        if ssrc != self._src_ssrc:
            self._new_source(ssrc, seq, ts, arrival)
        else:
            # RFC 3550 A.1 update_seq
            max_seq = self._max_seq
            udelta = (seq - max_seq) & 0xFFFF
            if 0 < udelta < MAX_DROPOUT:
                if seq < max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = seq
                self._seen[seq & 1023] = self._cycles + seq
            elif udelta == 0:
                self._stats.duplicates += 1
                return
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if not self._jump(seq, ts, arrival):
                    return
            else:  # misordered, or a duplicate of an older packet
                ext = self._cycles + max_seq - ((max_seq - seq) & 0xFFFF)
                i = seq & 1023
                if self._seen[i] == ext:
                    self._stats.duplicates += 1
                    return
                self._seen[i] = ext
                self._stats.out_of_order += 1
            # RFC 3550 A.8 interarrival jitter
            transit = arrival * self.clock_rate - ts
            d = transit - self._transit
            self._transit = transit
            if d < 0:
                d = -d
            if d > 2147483648.0:  # 32-bit timestamp wrapped
                d = abs(d - 4294967296.0)
            self._jitter += (d - self._jitter) * 0.0625
        self._received += 1
        st = self._stats
        st.packets_received += 1
        st.octets_received += len(payload)
        st.last_received = arrival
        cb = self.on_packet
        if cb is not None:
            cb(b1 & 0x7F, seq, ts, b1 > 127, payload, ssrc, arrival)

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = [-1] * _SEEN_WINDOW
        self._seen[seq & 1023] = seq

    def _new_source(self, ssrc: int, seq: int, ts: int, arrival: float) -> None:
        if self._src_ssrc is not None:
            self._stats.ssrc_changes += 1
            log.info("RTP port %d: remote SSRC changed %08x -> %08x",
                     self.local_port, self._src_ssrc, ssrc)
            self._lsr = 0
        self._src_ssrc = ssrc
        self._init_seq(seq)
        self._transit = arrival * self.clock_rate - ts
        self._jitter = 0.0

    def _jump(self, seq: int, ts: int, arrival: float) -> bool:
        """A.1: a large jump. Accept (restart) only if the next packet confirms it."""
        if seq == self._bad_seq:
            self._init_seq(seq)
            self._transit = arrival * self.clock_rate - ts
            self._stats.restarts += 1
            return True
        self._bad_seq = (seq + 1) & 0xFFFF
        self._stats.bad_packets += 1
        return False

    def _latch(self, addr: Any, ssrc: int) -> bool:
        """Symmetric RTP: True if this packet from a non-remote address is accepted."""
        cand = (addr, ssrc)
        if cand == self._cand:
            self._cand_count += 1
        else:
            self._cand = cand
            self._cand_count = 1
        if self._cand_count < self.latch_after:
            self._stats.foreign_packets += 1
            return False
        old = self.remote
        self.remote = (addr[0], addr[1])
        if not self.rtcp_mux:
            self.remote_rtcp = (addr[0], addr[1] + 1)
        else:
            self.remote_rtcp = self.remote
        self._cand = None
        self._cand_count = 0
        self._stats.latches += 1
        log.info("RTP port %d: latched remote %s -> %s:%d (SSRC %08x, symmetric RTP)",
                 self.local_port, f"{old[0]}:{old[1]}" if old else "(none)",
                 addr[0], addr[1], ssrc)
        return True

    # ------------------------------------------------------------ RTCP receive
    def _rtcp_received(self, data: bytes, addr: Any, muxed: bool) -> None:
        try:
            packets = RtcpPacket.parse(data)
        except (ValueError, struct.error, IndexError) as exc:
            self._stats.bad_rtcp += 1
            log.debug("RTP port %d: bad RTCP from %s: %s", self.local_port, addr, exc)
            return
        if not packets:
            self._stats.bad_rtcp += 1
            return
        if self.on_rtcp_feedback is not None:
            self._tmmbr(data)
        st = self._stats
        st.rtcp_received += 1
        now = _monotonic()
        for p in packets:
            if isinstance(p, RtcpSrPacket):
                self._rtcp_source(p.ssrc, addr, muxed)
                if p.ssrc == self._src_ssrc:
                    self._lsr = _ntp_middle(p.sender_info.ntp_timestamp)
                    self._lsr_arrival = now
                self._handle_reports(p.reports)
            elif isinstance(p, RtcpRrPacket):
                self._rtcp_source(p.ssrc, addr, muxed)
                self._handle_reports(p.reports)
            elif isinstance(p, RtcpByePacket):
                if self._src_ssrc is not None and self._src_ssrc in p.sources:
                    log.info("RTP port %d: RTCP BYE from SSRC %08x", self.local_port, self._src_ssrc)
                    if self.on_bye is not None:
                        self.on_bye()
            elif isinstance(p, RtcpPsfbPacket):
                self._handle_psfb(p)
            elif isinstance(p, RtcpRtpfbPacket):
                if p.fmt == RTCP_RTPFB_NACK and self.on_rtcp_feedback is not None:
                    self.on_rtcp_feedback("nack", [s & 0xFFFF for s in p.lost])

    def _tmmbr(self, data: bytes) -> None:
        """TMMBR (RFC 5104 §4.2.1: RTPFB FMT 3) in a compound packet that parsed: the far end's
        maximum bitrate for what we send it → ``on_rtcp_feedback("tmmbr", bit/s)``, answered with a
        TMMBN that echoes it (§4.2.2). aiortc reads every RTPFB as a NACK, so this reads the bytes."""
        i = 0
        while i + 12 <= len(data):
            b0, pt = data[i], data[i + 1]
            length = (int.from_bytes(data[i + 2:i + 4], "big") + 1) * 4
            if pt == 205 and b0 & 0x1F == 3:
                for k in range(i + 12, min(i + length, len(data)) - 7, 8):
                    ssrc, word = struct.unpack("!II", data[k:k + 8])
                    if ssrc != self.ssrc:
                        continue
                    exp, mantissa, overhead = word >> 26, (word >> 9) & 0x1FFFF, word & 0x1FF
                    bitrate = mantissa << exp
                    requester = int.from_bytes(data[i + 4:i + 8], "big")
                    self._send_rtcp(struct.pack("!BBHIIII", 0x80 | 4, 205, 4, self.ssrc, 0, requester, word))
                    cb = self.on_rtcp_feedback
                    if cb is not None:
                        cb("tmmbr", {"bitrate": bitrate, "overhead": overhead})
            i += length

    def _rtcp_source(self, ssrc: int, addr: Any, muxed: bool) -> None:
        """Symmetric RTCP: follow the RTCP source of the stream we receive."""
        if (self.symmetric and ssrc == self._src_ssrc and not muxed
                and addr != self.remote_rtcp and self.remote is not None):
            log.info("RTP port %d: RTCP of SSRC %08x comes from %s:%d, replying there",
                     self.local_port, ssrc, addr[0], addr[1])
            self.remote_rtcp = (addr[0], addr[1])

    def _handle_reports(self, reports: list[RtcpReceiverInfo]) -> None:
        st = self._stats
        for r in reports:
            if r.ssrc != self.ssrc:
                continue
            st.remote_fraction_lost = r.fraction_lost / 256.0
            st.remote_packets_lost = r.packets_lost
            st.remote_jitter_ms = r.jitter * 1000.0 / self.clock_rate
            if r.lsr:
                # RFC 3550 §6.4.1: RTT = A - LSR - DLSR (in 1/65536 s)
                a = _ntp_middle(ntp_now())
                rtt = (a - r.lsr - r.dlsr) & 0xFFFFFFFF
                if rtt & 0x80000000:  # slightly negative through rounding
                    rtt = 0
                if rtt < 65536 * 60:
                    st.rtt_ms = rtt * 1000.0 / 65536.0

    def _handle_psfb(self, p: RtcpPsfbPacket) -> None:
        cb = self.on_rtcp_feedback
        if cb is None:
            return
        if p.fmt == RTCP_PSFB_PLI:
            cb("pli", {"sender_ssrc": p.ssrc, "media_ssrc": p.media_ssrc})
        elif p.fmt == RTCP_PSFB_FIR:
            # RFC 5104 §4.3.1: FCI entries of (SSRC, seq nr, 3 reserved)
            fci = p.fci
            for pos in range(0, len(fci) - 7, 8):
                ssrc, seqnr = struct.unpack_from("!IB", fci, pos)
                if ssrc == self.ssrc:
                    cb("fir", {"sender_ssrc": p.ssrc, "seq": seqnr})
        elif p.fmt == RTCP_PSFB_APP and p.fci[:4] == b"REMB":
            try:
                bitrate, ssrcs = unpack_remb_fci(p.fci)
            except (ValueError, struct.error):
                self._stats.bad_rtcp += 1
                return
            cb("remb", {"bitrate": bitrate, "ssrcs": ssrcs})

    # ------------------------------------------------------------ send
    def send(self, payload: bytes, pt: int, timestamp_step: int, marker: bool = False) -> None:
        """Send one RTP packet with our own seq/timestamp (continuous across sources).

        The packet carries the current timestamp; the timestamp then advances by
        ``timestamp_step`` clock units and seq by 1, whatever the payload.
        """
        ts = self._ts
        if self._emit(payload, pt, ts, marker):
            self._ts = (ts + timestamp_step) & 0xFFFFFFFF

    def send_at(self, payload: bytes, pt: int, timestamp: int, marker: bool = False) -> None:
        """Send one RTP packet stamped ``timestamp`` (clock units from the sender's own origin, e.g.
        a video frame's presentation time) plus this session's random offset; seq advances by 1.
        Video uses it: the packets of one frame share its time stamp, whatever the frame rate."""
        self._emit(payload, pt, (self._ts + timestamp) & 0xFFFFFFFF, marker)

    def _emit(self, payload: bytes, pt: int, ts: int, marker: bool) -> bool:
        """Build and send one packet; False when it was not built (no remote yet, closed, or the
        unconfirmed budget spent: the sequence number is not used up then)."""
        remote = self.remote
        if remote is None or self._closed:
            self._stats.send_dropped += 1
            return False
        if not 0 <= pt < 128:
            raise ValueError(f"RTP payload type {pt} out of range 0..127")
        if not self.confirmed and self.unconfirmed_budget is not None and not self._may_send():
            return False
        seq = self._seq
        data = _HDR.pack(0x80, (0x80 | pt) if marker else pt, seq, ts, self.ssrc) + payload
        self._seq = (seq + 1) & 0xFFFF
        if self.history:
            self._sent[seq % self.history] = data
        if self.srtp is not None:
            data = self.srtp.protect(data)
        try:
            self._sock.sendto(data, remote)  # type: ignore[union-attr]
        except OSError:
            self._stats.send_errors += 1
            return True
        st = self._stats
        st.packets_sent += 1
        st.octets_sent += len(payload)
        self._last_sent_ts = ts
        self._last_sent_time = _monotonic()
        return True

    def confirm(self) -> None:
        """The far end is who it says (its RTP came, or the signalling confirmed it): send freely."""
        self.confirmed = True

    def _may_send(self) -> bool:
        if self._unconfirmed_sent < (self.unconfirmed_budget or 0):
            self._unconfirmed_sent += 1
            return True
        self._stats.send_unconfirmed += 1
        return False

    def retransmit(self, seqs: list[int]) -> int:
        """Send again the packets the far end reports lost (its NACK), those still in the history;
        returns how many went."""
        remote = self.remote
        if remote is None or self._closed or not self.history:
            return 0
        sent = 0
        for seq in seqs[:64]:
            data = self._sent.get(seq % self.history)
            if data is None or int.from_bytes(data[2:4], "big") != seq & 0xFFFF:
                continue
            if self.srtp is not None:
                data = self.srtp.protect(data)
            try:
                self._sock.sendto(data, remote)  # type: ignore[union-attr]
            except OSError:
                self._stats.send_errors += 1
                continue
            sent += 1
        self._stats.retransmitted += sent
        return sent

    def send_nack(self, seqs: list[int]) -> None:
        """Ask the far end to send these packets again (RTCP generic NACK, RFC 4585 §6.2.1)."""
        media = self._src_ssrc
        if media is None or not seqs or self._closed:
            return
        if self._send_rtcp(bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.ssrc, media_ssrc=media,
                                                  lost=sorted(set(s & 0xFFFF for s in seqs))[:64]))):
            self._stats.nacks_sent += len(seqs)

    # ------------------------------------------------------------ RTCP send
    def _report_block(self) -> RtcpReceiverInfo | None:
        if self._src_ssrc is None:
            return None
        extended_max = self._cycles + self._max_seq
        expected = extended_max - self._base_seq + 1
        lost = expected - self._received
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
            self._stats.fraction_lost = 0.0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
            self._stats.fraction_lost = lost_interval / expected_interval
        if self._lsr:
            lsr = self._lsr
            dlsr = int((_monotonic() - self._lsr_arrival) * 65536) & 0xFFFFFFFF
        else:
            lsr = dlsr = 0
        return RtcpReceiverInfo(
            ssrc=self._src_ssrc,
            fraction_lost=fraction,
            packets_lost=max(-(1 << 23), min(lost, (1 << 23) - 1)),
            highest_sequence=extended_max & 0xFFFFFFFF,
            jitter=int(self._jitter) & 0xFFFFFFFF,
            lsr=lsr,
            dlsr=dlsr,
        )

    def _build_report(self) -> bytes:
        block = self._report_block()
        reports = [block] if block is not None else []
        st = self._stats
        if st.packets_sent != self._sent_at_last_report and self._last_sent_ts is not None:
            self._sent_at_last_report = st.packets_sent
            ntp = ntp_now()
            elapsed = _monotonic() - self._last_sent_time
            rtp_ts = (self._last_sent_ts + int(elapsed * self.clock_rate)) & 0xFFFFFFFF
            head = bytes(RtcpSrPacket(
                ssrc=self.ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=st.packets_sent & 0xFFFFFFFF,
                    octet_count=st.octets_sent & 0xFFFFFFFF,
                ),
                reports=reports,
            ))
        else:
            head = bytes(RtcpRrPacket(ssrc=self.ssrc, reports=reports))
        sdes = bytes(RtcpSdesPacket(chunks=[
            RtcpSourceInfo(ssrc=self.ssrc, items=[(SDES_CNAME, self.cname.encode())])
        ]))
        return head + sdes

    def _send_rtcp(self, data: bytes) -> bool:
        dest = self.remote if self.rtcp_mux else self.remote_rtcp
        if dest is None or self._rtcp_port is None:
            return False
        port = self._rtp_port if self.rtcp_mux else self._rtcp_port
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        try:
            port.getHandle().sendto(data, dest)
        except (OSError, AttributeError) as exc:  # AttributeError: the port was closed under us (shutdown)
            self._stats.send_errors += 1
            log.debug("RTP port %d: RTCP send to %s failed: %s", self.local_port, dest, exc)
            return False
        self._stats.rtcp_sent += 1
        return True

    def send_rtcp_now(self) -> None:
        """SR (if we sent since the last report) or RR, plus SDES CNAME (RFC 3550 §6.1)."""
        if self._closed:
            return
        self._send_rtcp(self._build_report())

    def _feedback(self, fb: RtcpPsfbPacket) -> None:
        if self._closed:
            return
        # RFC 4585 §3.1: feedback goes in a compound packet after the report
        self._send_rtcp(self._build_report() + bytes(fb))

    def send_pli(self) -> None:
        """Picture Loss Indication (RFC 4585 §6.3.1) for the stream we receive."""
        if self._src_ssrc is None:
            log.debug("RTP port %d: PLI requested before any RTP arrived: not sent", self.local_port)
            return
        self._feedback(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.ssrc, media_ssrc=self._src_ssrc))

    def send_fir(self) -> None:
        """Full Intra Request (RFC 5104 §4.3.1) for the stream we receive."""
        if self._src_ssrc is None:
            log.debug("RTP port %d: FIR requested before any RTP arrived: not sent", self.local_port)
            return
        self._fir_seq = (self._fir_seq + 1) & 0xFF
        fci = struct.pack("!IB3x", self._src_ssrc, self._fir_seq)
        self._feedback(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=self.ssrc, media_ssrc=0, fci=fci))

    def _schedule_rtcp(self, first: bool = False) -> None:
        if self._closed or not self.rtcp_interval or self.rtcp_interval <= 0:
            self._rtcp_call = None
            return
        delay = self.rtcp_interval * random.uniform(0.5, 1.5)
        if first:
            delay /= 2  # RFC 3550 §6.2: the first report may go after half the interval
        self._rtcp_call = self._reactor.callLater(delay, self._periodic_rtcp)

    def _periodic_rtcp(self) -> None:
        self._rtcp_call = None
        try:
            self.send_rtcp_now()
        finally:
            self._schedule_rtcp()

    # ------------------------------------------------------------ timeout
    def _idle(self) -> float:
        last = self._stats.last_received
        if last is None or last < self._started_at:
            last = self._started_at
        return _monotonic() - last

    def _check_timeout(self) -> None:
        self._timeout_call = None
        if self._closed or self._timed_out:
            return
        idle = self._idle()
        if idle >= self.timeout - 0.005 and self.on_timeout is not None:
            # The loop runs due timers before it polls the sockets: after a stall of the
            # process, the packets that kept coming are still queued. Read them first.
            self._read_pending()
            if self._closed or self._timed_out:
                return
            idle = self._idle()
        if idle >= self.timeout - 0.005 and self.on_timeout is None:
            # nobody to tell yet (a call still ringing): count the silence from when someone listens
            self._started_at = _monotonic()
            self._timeout_call = self._reactor.callLater(self.timeout, self._check_timeout)
        elif idle >= self.timeout - 0.005:
            self._timed_out = True
            log.info("RTP port %d: no RTP for %.1f s: media timeout", self.local_port, idle)
            if self.on_timeout is not None:
                self.on_timeout()
        else:
            self._timeout_call = self._reactor.callLater(self.timeout - idle, self._check_timeout)

    # ------------------------------------------------------------ close
    def close(self) -> defer.Deferred:
        """Send RTCP BYE (if there is a remote), stop ports and timers, release the pair."""
        if self._closed:
            return defer.succeed(None)
        if self.remote_rtcp is not None or (self.rtcp_mux and self.remote is not None):
            bye = bytes(RtcpByePacket(sources=[self.ssrc]))
            self._send_rtcp(self._build_report() + bye)
        self._closed = True
        _open_sessions.discard(self)
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        for name in ("_timeout_call", "_rtcp_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        waits = []
        for port in (self._rtp_port, self._rtcp_port):
            if port is not None:
                d = port.stopListening()
                if isinstance(d, defer.Deferred):
                    waits.append(d)
        self._sock = None

        def release(result: Any) -> None:
            if self._allocator is not None:
                self._allocator.release(self.local_port)
            return None

        d = defer.gatherResults(waits, consumeErrors=True) if waits else defer.succeed(None)
        d.addBoth(release)
        return d

    def __repr__(self) -> str:
        return (f"RtpSession(port={self.local_port}, ssrc={self.ssrc:08x}, "
                f"remote={self.remote}, clock_rate={self.clock_rate})")


def open_rtp_session(
    allocator: PortAllocator,
    bind: str = "127.0.0.1",
    clock_rate: int = 8000,
    timeout: float = 30.0,
    reactor: Any = None,
    max_attempts: int = 16,
) -> RtpSession:
    """Allocate a port pair, bind RTP and RTCP on ``bind`` and start the session.

    A pair that cannot be bound (another process holds one of its ports) is
    skipped; after ``max_attempts`` failures PortsExhausted is raised. Pairs
    that failed are given back to the allocator (at the back of its queue).
    """
    if reactor is None:
        from twisted.internet import reactor as _r

        reactor = _r
    attempts = max(1, min(max_attempts, allocator.capacity))
    failed: list[int] = []
    last_error: Exception | None = None
    try:
        for _ in range(attempts):
            port = allocator.allocate()
            session = RtpSession(allocator, port, clock_rate=clock_rate, timeout=timeout,
                                 reactor=reactor, bind=bind)
            try:
                rtp_port = reactor.listenUDP(port, session, interface=bind)
            except CannotListenError as exc:
                failed.append(port)
                last_error = exc
                continue
            try:
                rtcp_port = reactor.listenUDP(port + 1, _RtcpProtocol(session), interface=bind)
            except CannotListenError as exc:
                rtp_port.stopListening()
                failed.append(port)
                last_error = exc
                continue
            session._start(rtp_port, rtcp_port)
            return session
        raise PortsExhausted(
            f"could not bind an RTP/RTCP port pair on {bind} in "
            f"{allocator.low}..{allocator.high} after {attempts} attempts "
            f"(ports held by another process?); last error: {last_error}"
        )
    finally:
        for p in failed:
            allocator.release(p)
