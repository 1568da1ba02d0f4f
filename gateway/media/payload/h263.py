"""H.263 over RTP: H263-1998 / H263-2000 (RFC 4629) and H263 on payload type 34 (RFC 2190, below).

Each packet starts with a 2-byte header (§5.1): ``RR(5) P V PLEN(6) PEBIT(3)``.
P=1 says the packet begins at a picture or GOB/slice start code whose two
zero bytes are left out. The packetizer splits a frame at its byte-aligned
start codes (FFmpeg's h263p encoder with ``ps`` = the payload size starts a new
GOB before each MTU's worth), packing whole GOBs into a packet while they fit,
and cuts a GOB that is larger than the MTU anywhere (P=0 on the rest, as §6
allows). The depacketizer rebuilds the bitstream (two zero bytes back where
P=1, a VRC byte and an extra picture header skipped) and knows an intra
picture from its PTYPE / PLUSPTYPE (H.263 §5.1.3, §5.1.4).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .frames import Frame, FrameAssembler

DEFAULT_MTU = 1200


def start_codes(data: bytes) -> list[int]:
    """Offsets of the byte-aligned picture / GOB start codes (``00 00 1xxxxxxx``)."""
    out = []
    i = data.find(b"\x00\x00")
    while 0 <= i < len(data) - 2:
        if data[i + 2] & 0x80:
            out.append(i)
            i = data.find(b"\x00\x00", i + 3)
        else:
            i = data.find(b"\x00\x00", i + 1)
    return out


def is_intra(picture: bytes) -> bool:
    """Whether ``picture`` (starting with its PSC) is an I picture; ValueError when it is no picture."""
    if len(picture) < 8 or picture[0] or picture[1] or picture[2] & 0xFC != 0x80:
        raise ValueError("not an H.263 picture start code")
    bits = int.from_bytes(picture[:9].ljust(9, b"\x00"), "big")
    n = 72

    def field(pos: int, width: int) -> int:
        return (bits >> (n - pos - width)) & ((1 << width) - 1)

    source_format = field(35, 3)
    if source_format != 7:
        return field(38, 1) == 0                    # PTYPE bit 9: 0 = INTRA
    ufep = field(38, 3)
    mpptype = 59 if ufep == 1 else 41               # OPPTYPE (18 bits) only when UFEP = 001
    return field(mpptype, 3) == 0                   # picture type 000 = I


class PacketTooLarge(ValueError):
    """A part of a picture cannot be split to fit the MTU."""


class H263Packetizer:
    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < 100:
            raise ValueError(f"MTU {mtu} is too small for video")
        self.mtu = mtu

    def packetize(self, frame: bytes) -> list[tuple[bytes, bool]]:
        """(payload, marker) pairs for one encoded picture."""
        room = self.mtu - 2                          # after the 2-byte RFC 4629 header
        cuts = start_codes(frame)
        if not cuts or cuts[0] != 0:
            cuts = [0] + cuts
        payloads: list[bytes] = []
        pending, pending_sc = b"", False             # whole GOBs gathered for one packet

        def content(data: bytes, sc: bool) -> bytes:
            return data[2:] if sc else data          # P=1: the start code's two zero bytes are left out

        def flush() -> None:
            if pending:
                payloads.append((b"\x04\x00" if pending_sc else b"\x00\x00") + content(pending, pending_sc))

        for a, b in zip(cuts, cuts[1:] + [len(frame)]):
            seg = frame[a:b]
            sc = seg[:2] == b"\x00\x00"
            if pending and len(content(pending, pending_sc)) + len(seg) <= room:
                pending += seg
                continue
            flush()
            pending, pending_sc = b"", False
            body = content(seg, sc)
            if len(body) <= room:
                pending, pending_sc = seg, sc
                continue
            payloads.append((b"\x04\x00" if sc else b"\x00\x00") + body[:room])   # a GOB above the MTU: cut
            payloads += [b"\x00\x00" + body[off:off + room] for off in range(room, len(body), room)]
        flush()
        return [(p, i == len(payloads) - 1) for i, p in enumerate(payloads)]


class H263Depacketizer(FrameAssembler):
    codec = "H.263+"

    def _build(self, ts: int, payloads: list[bytes]) -> Frame:
        parts = []
        for p in payloads:
            if len(p) < 3:
                raise ValueError("H263-1998 packet too short")
            pbit, vbit = bool(p[0] & 0x04), bool(p[0] & 0x02)
            plen = ((p[0] & 0x01) << 5) | (p[1] >> 3)
            head = 2 + (1 if vbit else 0) + plen
            if len(p) <= head:
                raise ValueError("H263-1998 header longer than the packet")
            parts.append((b"\x00\x00" if pbit else b"") + p[head:])
        data = b"".join(parts)
        return Frame(ts, data, keyframe=is_intra(data))


# --------------------------------------------------------------------------- RFC 2190 (H263, payload type 34)

@dataclass(frozen=True)
class MacroblockInfo:
    """One entry of FFmpeg's ``h263_mb_info`` side data: where a macroblock starts, and what a mode B
    header needs to resume decoding there (RFC 2190 §5.2)."""

    bit_offset: int
    quant: int
    gobn: int
    mba: int
    hmv1: int = 0
    vmv1: int = 0
    hmv2: int = 0
    vmv2: int = 0


def parse_mb_info(raw: bytes) -> list[MacroblockInfo]:
    """FFmpeg's 12-byte entries: bit offset LE32, quant, gobn, mba LE16, hmv1, vmv1, hmv2, vmv2."""
    out = []
    for off in range(0, len(raw) - 11, 12):
        bit, q, g, mba, h1, v1, h2, v2 = struct.unpack_from("<IBBHbbbb", raw, off)
        out.append(MacroblockInfo(bit, q, g, mba, h1, v1, h2, v2))
    return out


def picture_header(picture: bytes) -> tuple[int, bool]:
    """(source format, intra) of an H.263 picture (baseline PTYPE)."""
    if len(picture) < 5 or picture[0] or picture[1] or picture[2] & 0xFC != 0x80:
        raise ValueError("not an H.263 picture start code")
    bits = int.from_bytes(picture[:5], "big")
    return (bits >> 2) & 0x7, not (bits >> 1) & 0x1       # bits 35-37 and 38 of 40


class RFC2190Packetizer:
    """Mode A packets at picture / GOB start codes; mode B (with the macroblock info FFmpeg's h263
    encoder emits with ``mb_info``) where a GOB is larger than the MTU and has to be cut between
    macroblocks, on a bit boundary (SBIT/EBIT)."""

    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < 100:
            raise ValueError(f"MTU {mtu} is too small for video")
        self.mtu = mtu

    def packetize(self, frame: bytes, mb_info: list[MacroblockInfo] | None = None) -> list[tuple[bytes, bool]]:
        src, intra = picture_header(frame)
        room = self.mtu - 8                          # room for a mode B header
        codes = start_codes(frame)
        mbs = sorted(mb_info or (), key=lambda m: m.bit_offset)
        out: list[bytes] = []
        pos, sbit = 0, 0
        while pos < len(frame):
            if len(frame) - pos <= room:
                end, ebit = len(frame), 0
            else:
                sc = [c for c in codes if pos < c <= pos + room]
                if sc:
                    end, ebit = sc[-1], 0
                else:
                    cut = [m for m in mbs if pos * 8 + sbit < m.bit_offset <= (pos + room) * 8]
                    if not cut:
                        raise PacketTooLarge(f"an H.263 GOB of more than {room} bytes cannot be split without "
                                             "macroblock info (encode with mb_info)")
                    end_bit = cut[-1].bit_offset
                    end, ebit = -(-end_bit // 8), (-end_bit) % 8
            if sbit == 0 and frame[pos:pos + 2] == b"\x00\x00":
                header = struct.pack("!BBBB", ebit, (src << 5) | (0 if intra else 0x10), 0, 0)     # mode A
            else:
                at = next((m for m in mbs if m.bit_offset == pos * 8 + sbit), None)
                if at is None:
                    raise ValueError(f"no macroblock info at bit {pos * 8 + sbit} for a mode B packet")
                word = ((0 if intra else 1) << 31) | ((at.hmv1 & 0x7F) << 21) | ((at.vmv1 & 0x7F) << 14) \
                    | ((at.hmv2 & 0x7F) << 7) | (at.vmv2 & 0x7F)
                header = struct.pack("!BBBBI", 0x80 | (sbit << 3) | ebit, (src << 5) | (at.quant & 0x1F),
                                     ((at.gobn & 0x1F) << 3) | ((at.mba >> 6) & 0x07), (at.mba & 0x3F) << 2, word)
            out.append(header + frame[pos:end])
            pos, sbit = (end - 1, 8 - ebit) if ebit else (end, 0)
        return [(p, i == len(out) - 1) for i, p in enumerate(out)]


class RFC2190Depacketizer(FrameAssembler):
    """Pictures from RFC 2190 packets of mode A, B or C (bit-level joins by SBIT/EBIT)."""

    codec = "H.263"

    def _build(self, ts: int, payloads: list[bytes]) -> Frame:
        data = bytearray()
        prev_ebit = 0
        intra = None
        for p in payloads:
            if len(p) < 5:
                raise ValueError("RFC 2190 packet too short")
            f, pbit = bool(p[0] & 0x80), bool(p[0] & 0x40)
            sbit, ebit = (p[0] >> 3) & 0x7, p[0] & 0x7
            head = 4 if not f else 12 if pbit else 8
            if len(p) <= head:
                raise ValueError("RFC 2190 header longer than the packet")
            if intra is None:
                intra = not (p[1] & 0x10) if not f else not (p[4] & 0x80)
            body = bytearray(p[head:])
            if sbit:
                if not data or (8 - prev_ebit) % 8 != sbit:
                    raise ValueError(f"SBIT {sbit} does not continue the previous packet's EBIT {prev_ebit}")
                data[-1] |= body[0] & (0xFF >> sbit)
                body = body[1:]
            elif prev_ebit:
                raise ValueError(f"the previous packet ended inside a byte (EBIT {prev_ebit}) and this one does not continue it")
            if ebit and body:
                body[-1] &= (0xFF << ebit) & 0xFF
            data += body
            prev_ebit = ebit
        return Frame(ts, bytes(data), keyframe=bool(intra))
