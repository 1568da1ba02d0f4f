"""The places where Cầu reaches into aiortc's and aioice's internals — all of them, here.

aiortc is a complete WebRTC stack (ICE, DTLS, SRTP, RTP/RTCP, codecs); Cầu uses
its transport and its packetizers but not its codecs, because a room encodes
once per encoder group and decodes only what is on screen. aiortc has no public
API for that, so five private seams are used. Each one is checked by
``tests/test_webrtc_room.py`` against the pinned version (:data:`AIORTC_VERSION`):
an upgrade that moves one fails there first, not in a meeting.

1. **Received RTP** — ``RTCRtpReceiver`` keeps its jitter buffer in the
   name-mangled attribute ``_RTCRtpReceiver__jitter_buffer`` and calls its
   ``add(packet)`` once per packet, after RTCP statistics, RTX unwrapping and
   NACK generation, before decoding. :func:`tap_receiver` puts a
   :class:`_Tap` there that hands the packet to Cầu's own audio/video pipeline
   and returns "no frame", so aiortc never decodes (its decoder thread idles).
2. **Keyframe requests** — ``RTCRtpSender._handle_rtcp_packet`` turns a PLI or
   FIR into ``self._send_keyframe()``, which only matters on aiortc's own
   encoder path: with pre-encoded packets it is dropped. :func:`hook_sender`
   replaces ``_send_keyframe`` on the instance.
3. **REMB and receiver reports** — the same handler reads REMB only for
   aiortc's encoder and keeps RR figures in its stats report; :func:`hook_sender`
   wraps ``_handle_rtcp_packet`` on the instance to see them first.
4. **Sending** — ``RTCRtpSender._run_rtp`` awaits the track for each frame and then five
   nested coroutines per packet down to ``sendto``. :func:`fast_sender` replaces it on the
   instance with a loop that only keeps the sender's bookkeeping alive; the frames are pushed:
   each is packed by aiortc's packetizer, every packet built by aiortc's ``RtpPacket``, kept in
   the sender's NACK history, protected by the DTLS transport's SRTP session and written to the
   nominated ICE pair's socket at once, and the counters RTCP sender reports read are kept.
5. **Host candidates** — aioice gathers its host candidates from
   ``aioice.ice.get_host_addresses``, which leaves out 127.0.0.1 and includes
   every other interface; :func:`set_host_addresses` replaces that function so
   the gateway offers exactly the addresses the operator configured.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import aiortc
from aiortc.rtp import (RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket,
                         unpack_remb_fci)
from aiortc import clock as aiortc_clock
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import random16, random32

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: the aiortc release whose internals this module was written against (setup.cfg pins it)
AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"

_original_host_addresses = aioice.ice.get_host_addresses


class HookError(RuntimeError):
    """aiortc is not the version these seams were written for."""


def check_versions() -> None:
    if aiortc.__version__ != AIORTC_VERSION or aioice.__version__ != AIOICE_VERSION:
        raise HookError(f"Cầu's WebRTC adapter is written for aiortc {AIORTC_VERSION} / aioice {AIOICE_VERSION}, "
                        f"found {aiortc.__version__} / {aioice.__version__}: install the pinned versions")


class _Tap:
    """Stands in for an RTCRtpReceiver's jitter buffer: every packet goes to ``deliver``."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver
        self.packets = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        self.packets += 1
        try:
            self.deliver(packet)
        except Exception:
            log.exception("a received WebRTC packet could not be handled")
        return False, None     # no PLI from aiortc, no frame for its decoder

    def remove(self, count: int) -> None:   # the buffer's other method (unused by the receiver's RTP path)
        pass


def tap_receiver(receiver: RTCRtpReceiver, deliver: Callable[[Any], None]) -> _Tap:
    """Hand ``receiver``'s RTP packets (``aiortc.rtp.RtpPacket``) to ``deliver`` instead of its decoder."""
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        raise HookError("aiortc's RTCRtpReceiver has no _RTCRtpReceiver__jitter_buffer any more")
    tap = _Tap(deliver)
    receiver._RTCRtpReceiver__jitter_buffer = tap   # type: ignore[attr-defined]
    return tap


def receiver_statistics(receiver: RTCRtpReceiver) -> Any | None:
    """aiortc's RFC 3550 statistics of the stream ``receiver`` gets (the first SSRC), or None."""
    streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", None) or {}
    return next(iter(streams.values()), None)


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Any:
    """Ask the sender of ``media_ssrc`` for a keyframe (RTCP PLI); returns the coroutine to schedule."""
    return receiver._send_rtcp_pli(media_ssrc)


def hook_sender(sender: RTCRtpSender, *, on_keyframe: Callable[[], None],
                on_remb: Callable[[int], None] | None = None,
                on_report: Callable[[Any], None] | None = None) -> None:
    """PLI/FIR → ``on_keyframe()``; a REMB naming our SSRC → ``on_remb(bits_per_second)``; a report
    block about our SSRC → ``on_report(block)`` (fraction_lost/256, jitter, lsr, dlsr). aiortc's own
    handling (NACK retransmission, RTT) still runs."""
    if not callable(getattr(sender, "_send_keyframe", None)) or not callable(getattr(sender, "_handle_rtcp_packet", None)):
        raise HookError("aiortc's RTCRtpSender has no _send_keyframe / _handle_rtcp_packet any more")
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        try:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP and on_remb is not None:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    pass
                else:
                    if sender._ssrc in ssrcs:
                        on_remb(int(bitrate))
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and on_report is not None:
                for block in packet.reports:
                    if block.ssrc == sender._ssrc:
                        on_report(block)
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                pass   # original() calls _send_keyframe
        except Exception:
            log.exception("RTCP feedback from a browser could not be handled")
        await original(packet)

    sender._handle_rtcp_packet = handle            # type: ignore[method-assign]
    sender._send_keyframe = on_keyframe            # type: ignore[method-assign]


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """aiortc's round-trip time estimate for ``sender`` (seconds), from SR/RR LSR/DLSR."""
    return getattr(sender, "_RTCRtpSender__rtt", None)


def is_local_address(address: str) -> bool:
    """An address this machine has (a UDP socket can be bound to it)."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def set_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates on exactly ``addresses`` (None: aioice's own choice, every interface
    but loopback)."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


class FastSender:
    """The RTP side of one aiortc sender fed by pushes (see seam 4 in the module docstring).

    ``push(packet)`` sends an ``av.Packet`` (a whole encoded frame, pts and time base set) now;
    nothing is sent before aiortc starts the sender (DTLS up, codec chosen) or after it stops."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.sender = sender
        self.codec: Any = None
        self.encoder: Any = None
        self.running = False
        self.sent = 0
        self.dropped = 0
        self._seq = 0
        self._ts_origin = 0
        self._stop = asyncio.Event()

    async def run(self, codec: Any) -> None:
        """Stands in for ``RTCRtpSender._run_rtp(codec)``."""
        s = self.sender
        s._RTCRtpSender__rtp_started.set()
        self.codec = codec
        self.encoder = get_encoder(codec)
        self._seq = random16()
        self._ts_origin = random32()
        self.running = True
        try:
            await self._stop.wait()
        except asyncio.CancelledError:
            pass
        finally:
            self.running = False
            self.encoder = None
            s._RTCRtpSender__rtp_exited.set()

    def stop(self) -> None:
        self._stop.set()

    def push(self, packet: Any) -> bool:
        """Send one frame now; False (counted as dropped) when it could not be, never an exception:
        the encoder group hands the same frame to everyone after this receiver."""
        try:
            return self._push(packet)
        except Exception:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 500 == 0:
                log.exception("a frame could not be sent to %s (%d so far)", self.sender, self.dropped)
            return False

    def _push(self, packet: Any) -> bool:
        if not self.running:
            self.dropped += 1
            return False
        s = self.sender
        dtls = s.transport
        pair = dtls.transport._connection._nominated.get(1) if dtls._state == DtlsState.CONNECTED else None
        if pair is None:
            self.dropped += 1
            return False
        payloads, timestamp = self.encoder.pack(packet)
        if not payloads:
            return False
        ts = (self._ts_origin + timestamp) & 0xFFFFFFFF
        pt = self.codec.payloadType
        ext_map = s._RTCRtpSender__rtp_header_extensions_map
        history = s._RTCRtpSender__rtp_history
        mid = s._RTCRtpSender__mid
        ssrc = s._ssrc
        protect = dtls._tx_srtp.protect
        sendto = pair.protocol.transport.sendto
        remote = pair.remote_addr
        ntp = aiortc_clock.current_ntp_time()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        last = len(payloads) - 1
        seq = self._seq
        octets = 0
        for i, payload in enumerate(payloads):
            p = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts)
            p.ssrc = ssrc
            p.payload = payload
            p.marker = 1 if i == last else 0
            p.extensions.abs_send_time = abs_send_time
            p.extensions.mid = mid
            history[seq % RTP_HISTORY_SIZE] = p
            sendto(protect(p.serialize(ext_map)), remote)
            octets += len(payload)
            seq = (seq + 1) & 0xFFFF
        self._seq = seq
        # what the sender's RTCP sender reports say
        s._RTCRtpSender__ntp_timestamp = ntp
        s._RTCRtpSender__rtp_timestamp = ts
        s._RTCRtpSender__octet_count += octets
        s._RTCRtpSender__packet_count += len(payloads)
        self.sent += len(payloads)
        return True


def fast_sender(sender: RTCRtpSender) -> FastSender:
    """Replace ``sender``'s RTP loop with a :class:`FastSender` (before aiortc starts the sender)."""
    for name in ("_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited", "_RTCRtpSender__rtp_header_extensions_map",
                 "_RTCRtpSender__rtp_history", "_RTCRtpSender__mid", "_RTCRtpSender__ntp_timestamp",
                 "_RTCRtpSender__rtp_timestamp", "_RTCRtpSender__octet_count", "_RTCRtpSender__packet_count"):
        if not hasattr(sender, name):
            raise HookError(f"aiortc's RTCRtpSender has no {name} any more")
    fast = FastSender(sender)
    sender._run_rtp = fast.run                     # type: ignore[method-assign]
    return fast
