"""H.263+ over RTP as H263-1998 / H263-2000 (RFC 4629).

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
