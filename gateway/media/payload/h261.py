"""H.261 over RTP, RFC 4587: the 4-byte header and packets that begin and end on bit boundaries.

H.261 start codes are not byte aligned: a picture (PSC, 20 bits ``0000 0000 0000 0001 0000``) and
each group of blocks (GBSC, ``0000 0000 0000 0001`` + a 4-bit GOB number) may begin at any bit,
and nothing else in the bitstream has fifteen zeros in a row. The packetizer finds them at bit
level and packs whole GOBs into packets up to the MTU; the first and last byte of a packet
may be shared with its neighbours, which SBIT / EBIT say (bits to ignore at the start of the
first byte / the end of the last). A GOB larger than the MTU (an intra picture at a high
bitrate) is cut inside it, as FFmpeg's own RTP muxer does: such a packet's GOBN and QUANT are
the GOB's, MBAP and the motion vector predictors 0 — a receiver that rejoins whole frames (as
FFmpeg's, and ours) decodes it, one that resumes at every packet after a loss waits for the
next GOB.

H.261 has no picture type: a frame is intra when every GOB begins with macroblock 1 coded
INTRA (MTYPE ``0001`` or ``0000 001`` with MQUANT), which is how an encoder's forced intra
picture looks.

Header (RFC 4587 §4.1)::

    SBIT:3 EBIT:3 I:1 V:1 GOBN:4 MBAP:5 QUANT:5 HMVD:5 VMVD:5
"""
from __future__ import annotations

from .frames import Frame, FrameAssembler

DEFAULT_MTU = 1200
HEADER = 4
START = "0000000000000001"       # 15 zeros and a one: PSC (GN 0) or GBSC (GN 1..12)


def _bits(data: bytes) -> str:
    return bin(int.from_bytes(data, "big"))[2:].zfill(len(data) * 8) if data else ""


def start_codes(bits: str) -> list[tuple[int, int]]:
    """(bit position, GN) of every start code: GN 0 is a picture start, 1..12 a GOB."""
    out = []
    i = bits.find(START)
    while i >= 0 and i + 20 <= len(bits):
        out.append((i, int(bits[i + 16:i + 20], 2)))
        i = bits.find(START, i + 20)
    return out


def gob_quant(bits: str, pos: int) -> int:
    """GQUANT of the GOB whose start code is at ``pos``."""
    return int(bits[pos + 20:pos + 25] or "0", 2)


def is_intra(bits: str, codes: list[tuple[int, int]] | None = None) -> bool:
    """Every GOB begins with macroblock 1 coded INTRA (see the module's docstring)."""
    gobs = [p for p, gn in (codes if codes is not None else start_codes(bits)) if gn]
    if not gobs:
        return False
    for p in gobs:
        i = p + 16 + 4 + 5            # GBSC, GN, GQUANT
        while i < len(bits) and bits[i] == "1":   # GEI: a GSPARE byte follows
            i += 9
        i += 1                        # the final GEI = 0
        while bits.startswith("00000001111", i):  # MBA stuffing
            i += 11
        if not bits.startswith("1", i):           # MBA = 1: the GOB's first macroblock is coded
            return False
        if not (bits.startswith("0001", i + 1) or bits.startswith("0000001", i + 1)):
            return False
    return True


class PacketTooLarge(ValueError):
    pass


class H261Packetizer:
    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < HEADER + 16:
            raise ValueError(f"MTU {mtu} is too small for H.261 packets")
        self.mtu = mtu

    def packetize(self, frame: bytes) -> list[tuple[bytes, bool]]:
        """One coded picture → RTP payloads (marker on the last)."""
        bits = _bits(frame)
        end = len(bits)
        codes = start_codes(bits)
        if not codes:
            raise ValueError("no H.261 picture start code")
        # the units are GOBs; the picture header travels with the first GOB. Trailing bits after
        # the last GOB (the encoder's padding to a byte) end with the picture.
        cuts = [codes[0][0]] + [p for p, gn in codes if gn] + [end]
        cuts = sorted(set(cuts))
        gn_at = {p: gn for p, gn in codes}
        budget = (self.mtu - HEADER) * 8 - 16        # room for the bytes SBIT and EBIT share
        packets: list[tuple[int, int, int, int]] = []   # (start bit, end bit, GOBN, QUANT) of each
        start = cuts[0]
        gob = (0, 0)                                  # GOB in effect where a mid-GOB cut lands
        for a, b in zip(cuts, cuts[1:]):
            if b - start <= budget:
                continue                              # the GOB fits in the packet being filled
            if a > start:                             # close the packet before this GOB
                packets.append((start, a, 0, 0))
                start = a
            gn = gn_at.get(a, 0)
            if gn:
                gob = (gn, gob_quant(bits, a))
            while b - start > budget:                 # a GOB above the MTU: cut inside it
                cut = start + budget
                packets.append((start, cut, *(gob if start != a else (0, 0))))
                start = cut
        if start < end:
            packets.append((start, end, 0, 0) if start in gn_at else (start, end, *gob))
        out = []
        for n, (s, e, gobn, quant) in enumerate(packets):
            sbit, ebit = s % 8, (8 - e % 8) % 8
            hdr = (sbit << 29) | (ebit << 26) | (0 << 25) | (1 << 24) | (gobn << 20) | (quant << 10)
            out.append((hdr.to_bytes(4, "big") + frame[s // 8:(e + 7) // 8], n == len(packets) - 1))
        return out


class H261Frame(Frame):
    pass


class H261Depacketizer(FrameAssembler):
    """Whole pictures from RFC 4587 packets: each packet's bits (less SBIT / EBIT) rejoined."""

    codec = "H.261"

    def _build(self, ts: int, payloads: list[bytes]) -> Frame:
        parts = []
        for p in payloads:
            if len(p) <= HEADER:
                raise ValueError("H.261 packet without data")
            sbit, ebit = p[0] >> 5, (p[0] >> 2) & 7
            bits = _bits(p[HEADER:])
            if sbit + ebit >= len(bits):
                raise ValueError("H.261 SBIT/EBIT cover the whole packet")
            parts.append(bits[sbit:len(bits) - ebit])
        bits = "".join(parts)
        codes = start_codes(bits)
        if not codes or codes[0][1] != 0:
            raise ValueError("H.261 frame does not begin with a picture start code")
        pad = (-len(bits)) % 8
        data = int(bits + "0" * pad, 2).to_bytes((len(bits) + pad) // 8, "big")
        return Frame(ts, data, is_intra(bits, codes))
