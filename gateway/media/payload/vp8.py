"""VP8 over RTP (RFC 7741).

Each packet starts with the payload descriptor (§4.2): ``X R N S R PID``, and
with X the extension byte ``I L T K``, then a 15-bit PictureID (``M`` set),
TL0PICIDX, TID/KEYIDX as flagged. We send X=1, I=1 with a 15-bit PictureID
that counts frames, S=1 on a frame's first packet, PID 0 (one partition as
libvpx writes it), and split the frame at the MTU; the marker bit ends the
frame. A keyframe is a frame whose first payload byte has the P bit clear
(§4.3, RFC 6386 §9.1).
"""
from __future__ import annotations

from .frames import Frame, FrameAssembler

DEFAULT_MTU = 1200


class VP8Packetizer:
    def __init__(self, mtu: int = DEFAULT_MTU, picture_id: int = 0) -> None:
        if mtu < 100:
            raise ValueError(f"MTU {mtu} is too small for video")
        self.mtu = mtu
        self.picture_id = picture_id & 0x7FFF

    def packetize(self, frame: bytes) -> list[tuple[bytes, bool]]:
        """(payload, marker) pairs for one encoded VP8 frame."""
        pid = self.picture_id
        self.picture_id = (pid + 1) & 0x7FFF
        room = self.mtu - 4
        out = []
        for off in range(0, max(1, len(frame)), room):
            start = off == 0
            desc = bytes([0x90 if start else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF])   # X, (S), I; M + 15 bits
            out.append(desc + frame[off:off + room])
        return [(p, i == len(out) - 1) for i, p in enumerate(out)]


def parse_descriptor(payload: bytes) -> tuple[int, bool, int, int | None]:
    """(header length, S bit, partition index, PictureID or None); ValueError when truncated."""
    if not payload:
        raise ValueError("empty VP8 payload")
    b0 = payload[0]
    i = 1
    picture_id = None
    if b0 & 0x80:                                   # X: extension byte
        if len(payload) < 2:
            raise ValueError("VP8 descriptor truncated (X)")
        x = payload[1]
        i = 2
        if x & 0x80:                                # I: PictureID
            if len(payload) < i + 1:
                raise ValueError("VP8 descriptor truncated (PictureID)")
            if payload[i] & 0x80:                   # M: 15 bits
                if len(payload) < i + 2:
                    raise ValueError("VP8 descriptor truncated (15-bit PictureID)")
                picture_id = ((payload[i] & 0x7F) << 8) | payload[i + 1]
                i += 2
            else:
                picture_id = payload[i] & 0x7F
                i += 1
        if x & 0x40:                                # L: TL0PICIDX
            i += 1
        if x & 0x30:                                # T or K: TID/Y/KEYIDX
            i += 1
    if len(payload) <= i:
        raise ValueError("VP8 payload without data")
    return i, bool(b0 & 0x10), b0 & 0x07, picture_id


class VP8Depacketizer(FrameAssembler):
    codec = "VP8"

    def _build(self, ts: int, payloads: list[bytes]) -> Frame:
        parts = []
        for n, p in enumerate(payloads):
            head, start, partition, _ = parse_descriptor(p)
            if n == 0 and not (start and partition == 0):
                raise ValueError("the frame's first packet does not start partition 0")
            parts.append(p[head:])
        data = b"".join(parts)
        return Frame(ts, data, keyframe=not data[0] & 0x01)
