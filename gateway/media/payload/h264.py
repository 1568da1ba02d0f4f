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

log = logging.getLogger(__name__)

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
class H264Frame:
    """One reassembled access unit."""

    timestamp: int
    data: bytes                    # Annex B
    keyframe: bool                 # holds an IDR slice
    nal_types: list[int] = field(default_factory=list)


@dataclass
class DepacketizerStats:
    frames: int = 0
    dropped: int = 0               # frames given up for a missing packet
    malformed: int = 0             # payloads that do not parse (counted, dropped)
    keyframes: int = 0
    late: int = 0                  # packets for a frame already emitted or dropped


class H264Depacketizer:
    """Annex B access units from RTP packets of any packetization mode.

    ``window`` packets of reordering are waited for before a gap counts as loss.
    """

    def __init__(self, parameter_sets: list[bytes] | None = None, window: int = 8) -> None:
        self.window = window
        self.stats = DepacketizerStats()
        self.keyframe_needed = True           # nothing decodable before the first IDR
        self._params = list(parameter_sets or ())
        self._frames: dict[int, dict[int, tuple[bool, bytes]]] = {}   # ts → seq → (marker, payload)
        self._next_seq: int | None = None      # first sequence number of the next frame
        self._highest: int | None = None       # highest (extended) sequence number seen
        self._done_ts: set[int] = set()

    # -- sequence numbers ---------------------------------------------------------------
    def _extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        base = self._highest & ~0xFFFF
        cand = base | seq
        if cand - self._highest > 0x8000:
            cand -= 0x10000
        elif self._highest - cand > 0x8000:
            cand += 0x10000
        self._highest = max(self._highest, cand)
        return cand

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> list[H264Frame]:
        """Take one RTP packet; returns the frames it completed (in order; often none)."""
        ext = self._extend(seq & 0xFFFF)
        if timestamp in self._done_ts or (self._next_seq is not None and ext < self._next_seq):
            self.stats.late += 1
            return []
        self._frames.setdefault(timestamp, {})[ext] = (bool(marker), bytes(payload))
        return self._drain()

    def _drain(self) -> list[H264Frame]:
        out: list[H264Frame] = []
        while self._frames:
            # frames in sequence-number order (packets, and so frames, may arrive out of order)
            order = sorted(self._frames, key=lambda t: min(self._frames[t]))
            ts = order[0]
            pkts = self._frames[ts]
            seqs = sorted(pkts)
            first = seqs[0] if self._next_seq is None else self._next_seq
            complete_run = seqs[0] == first and seqs[-1] - first + 1 == len(seqs)
            has_end = pkts[seqs[-1]][0] or (len(order) > 1 and min(self._frames[order[1]]) == seqs[-1] + 1)
            if complete_run and has_end:
                out.extend(self._emit(ts, [pkts[s][1] for s in seqs]))
                self._next_seq = seqs[-1] + 1
                continue
            # incomplete: wait for reordered packets, unless the stream has moved on too far
            if self._highest is not None and self._highest - seqs[-1] <= self.window and len(order) < 3:
                break
            self._drop(ts)
            self._next_seq = max(seqs) + 1
        return out

    def _drop(self, ts: int) -> None:
        self._forget(ts)
        self.stats.dropped += 1
        self.keyframe_needed = True

    def _forget(self, ts: int) -> None:
        self._frames.pop(ts, None)
        self._done_ts.add(ts)
        if len(self._done_ts) > 64:
            self._done_ts = set(sorted(self._done_ts)[-32:])

    def _emit(self, ts: int, payloads: list[bytes]) -> list[H264Frame]:
        self._forget(ts)
        try:
            nals = self._nals(payloads)
        except ValueError as exc:
            log.debug("H.264 frame at ts %d dropped: %s", ts, exc)
            self.stats.malformed += 1
            self.stats.dropped += 1
            self.keyframe_needed = True
            return []
        types = [nal_type(n) for n in nals]
        key = NAL_IDR in types
        if key:
            present = set(types)
            lead = [p for p in self._params if nal_type(p) not in present]
            nals = lead + nals
            types = [nal_type(n) for n in nals]
            self.keyframe_needed = False
            self.stats.keyframes += 1
            self._params = [n for n in nals if nal_type(n) in (NAL_SPS, NAL_PPS)] or self._params
        elif self.keyframe_needed:
            self.stats.dropped += 1      # a P frame without its reference: not decodable
            return []
        self.stats.frames += 1
        return [H264Frame(ts, b"".join(START_CODE + n for n in nals), key, types)]

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
