"""H.264 over RTP (RFC 6184): single NAL unit packets, STAP-A and FU-A; packetization-mode 0 and 1.

:class:`H264Packetizer` turns one access unit (Annex B bytes, as libx264
writes them) into RTP payloads for one receiver: in mode 0 (single NAL unit,
§6.2) every NAL unit is its own packet, so each must fit the MTU — an encoder
whose slices are capped below the MTU (libx264 ``slice-max-size``) serves
mode-0 and mode-1 receivers with one bitstream; in mode 1 (non-interleaved,
§6.3) small NAL units are aggregated into STAP-A packets (§5.7.1) and large
ones fragmented into FU-A (§5.8). SPS and PPS are sent before every IDR (from
``sprop-parameter-sets`` or the last ones seen in-band) so a receiver that
joined late, or lost them, can decode.

:class:`H264Depacketizer` reassembles what a sender packetized, in any mode
(single NAL, STAP-A, FU-A), into Annex B access units by RTP timestamp. Packets
may arrive out of order within a small window. A frame with a missing packet
(a sequence gap, an FU-A without its start or end) is dropped, never handed to
a decoder, and :attr:`H264Depacketizer.keyframe_needed` is set until an IDR
arrives: the adapter then asks the sender for a keyframe (PLI, FIR, H.245 or
SIP INFO). Malformed payloads are counted and dropped.
"""
from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field

from .frames import Frame, FrameAssembler

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 5, 6, 7, 8, 9
STAP_A, FU_A = 24, 28
DEFAULT_MTU = 1200          # bytes of RTP payload


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes removed)."""
    out: list[bytes] = []
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        return [data] if data else []
    start = i + 3
    while True:
        j = data.find(b"\x00\x00\x01", start)
        if j < 0:
            nal = data[start:n]
            if nal:
                out.append(nal.rstrip(b"\x00") if nal.endswith(b"\x00\x00") else nal)
            return out
        end = j - 1 if j > start and data[j - 1] == 0 else j   # a 4-byte start code's leading zero
        if end > start:
            out.append(data[start:end])
        start = j + 3


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


def parse_sprop(text: str | None) -> list[bytes]:
    """``sprop-parameter-sets`` (RFC 6184 §8.1: base64 NAL units, comma separated); bad entries skipped."""
    out: list[bytes] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nal = base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        if nal and nal_type(nal) in (NAL_SPS, NAL_PPS):
            out.append(nal)
    return out


class PacketTooLarge(ValueError):
    """Mode 0 cannot carry a NAL unit larger than the MTU (the encoder must cap its slices)."""


class H264Packetizer:
    """Payloads for one (packetization mode, MTU) from Annex B access units."""

    def __init__(self, mode: int = 1, mtu: int = DEFAULT_MTU, parameter_sets: list[bytes] | None = None) -> None:
        if mode not in (0, 1):
            raise ValueError(f"packetization-mode {mode} is not supported (0 and 1 are)")
        if mtu < 100:
            raise ValueError(f"MTU {mtu} is too small for video")
        self.mode = mode
        self.mtu = mtu
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        for nal in parameter_sets or ():
            self._remember(nal)
        self.oversized = 0          # mode-0 NAL units dropped for being above the MTU

    def _remember(self, nal: bytes) -> None:
        t = nal_type(nal)
        if t == NAL_SPS:
            self._sps = nal
        elif t == NAL_PPS:
            self._pps = nal

    def packetize(self, access_unit: bytes) -> list[tuple[bytes, bool]]:
        """(payload, marker) pairs for one access unit; the marker is set on its last packet."""
        nals = [n for n in split_annexb(access_unit) if nal_type(n) != NAL_AUD]
        for n in nals:
            self._remember(n)
        if any(nal_type(n) == NAL_IDR for n in nals):
            have = {nal_type(n) for n in nals}
            lead = [p for p, t in ((self._sps, NAL_SPS), (self._pps, NAL_PPS)) if p is not None and t not in have]
            nals = lead + nals
        payloads = self._single(nals) if self.mode == 0 else self._non_interleaved(nals)
        return [(p, i == len(payloads) - 1) for i, p in enumerate(payloads)]

    def _single(self, nals: list[bytes]) -> list[bytes]:
        out = []
        for n in nals:
            if len(n) > self.mtu:
                self.oversized += 1
                raise PacketTooLarge(f"a {len(n)}-byte NAL unit does not fit a {self.mtu}-byte packet in "
                                     "packetization-mode 0 (cap the encoder's slices below the MTU)")
            out.append(n)
        return out

    def _non_interleaved(self, nals: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        group: list[bytes] = []
        size = 1                                  # the STAP-A header byte

        def flush() -> None:
            nonlocal group, size
            if len(group) == 1:
                out.append(group[0])
            elif group:
                nri = max(g[0] & 0x60 for g in group)
                out.append(bytes([nri | STAP_A]) + b"".join(len(g).to_bytes(2, "big") + g for g in group))
            group, size = [], 1

        for n in nals:
            if len(n) > self.mtu:
                flush()
                out.extend(self._fragment(n))
                continue
            if group and size + 2 + len(n) > self.mtu:
                flush()
            group.append(n)
            size += 2 + len(n)
        flush()
        return out

    def _fragment(self, nal: bytes) -> list[bytes]:
        indicator = (nal[0] & 0xE0) | FU_A
        kind = nal[0] & 0x1F
        body = memoryview(nal)[1:]
        room = self.mtu - 2
        out = []
        for off in range(0, len(body), room):
            start, end = off == 0, off + room >= len(body)
            header = (0x80 if start else 0) | (0x40 if end else 0) | kind
            out.append(bytes([indicator, header]) + bytes(body[off:off + room]))
        return out


@dataclass
class H264Frame(Frame):
    """One reassembled access unit (``data`` in Annex B)."""

    nal_types: list[int] = field(default_factory=list)


class H264Depacketizer(FrameAssembler):
    """Annex B access units from RTP packets of any packetization mode (single NAL, STAP-A, FU-A).
    SPS/PPS (from ``sprop-parameter-sets``, or the last seen in-band) are put before every IDR
    that arrives without them."""

    codec = "H.264"

    def __init__(self, parameter_sets: list[bytes] | None = None, window: int = 8) -> None:
        super().__init__(window)
        self._params = list(parameter_sets or ())

    def _build(self, ts: int, payloads: list[bytes]) -> H264Frame:
        nals = self._nals(payloads)
        types = [nal_type(n) for n in nals]
        key = NAL_IDR in types
        if key:
            present = set(types)
            nals = [p for p in self._params if nal_type(p) not in present] + nals
            types = [nal_type(n) for n in nals]
            self._params = [n for n in nals if nal_type(n) in (NAL_SPS, NAL_PPS)] or self._params
        return H264Frame(ts, b"".join(START_CODE + n for n in nals), key, types)

    @staticmethod
    def _nals(payloads: list[bytes]) -> list[bytes]:
        nals: list[bytes] = []
        fu: bytearray | None = None
        for p in payloads:
            if not p:
                raise ValueError("empty payload")
            t = p[0] & 0x1F
            if 1 <= t <= 23:
                if fu is not None:
                    raise ValueError("FU-A interrupted by a single NAL unit")
                nals.append(p)
            elif t == STAP_A:
                i = 1
                while i < len(p):
                    if i + 2 > len(p):
                        raise ValueError("STAP-A truncated size")
                    size = int.from_bytes(p[i:i + 2], "big")
                    if size == 0 or i + 2 + size > len(p):
                        raise ValueError("STAP-A NAL unit size beyond the packet")
                    nals.append(p[i + 2:i + 2 + size])
                    i += 2 + size
            elif t == FU_A:
                if len(p) < 3:
                    raise ValueError("FU-A too short")
                start, end = bool(p[1] & 0x80), bool(p[1] & 0x40)
                if start:
                    if fu is not None:
                        raise ValueError("FU-A start inside another FU-A")
                    fu = bytearray([(p[0] & 0xE0) | (p[1] & 0x1F)])
                elif fu is None:
                    raise ValueError("FU-A without its start")
                fu += p[2:]
                if end:
                    nals.append(bytes(fu))
                    fu = None
            else:
                raise ValueError(f"NAL unit type {t} (STAP-B, MTAP, FU-B need interleaved mode)")
        if fu is not None:
            raise ValueError("FU-A without its end")
        return nals
