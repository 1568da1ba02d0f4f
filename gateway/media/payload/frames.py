"""Whole frames from RTP packets, whatever the payload format: the part every video depacketizer shares.

:class:`FrameAssembler` groups packets by RTP timestamp, orders frames by
sequence number (packets may be reordered within ``window`` packets, and
while fewer than three frames are pending), and hands a frame's payloads to
the codec's ``_build`` only when none is missing: its first packet follows the
previous frame's last, the numbers run without a gap, and it ends (marker bit,
or the next frame begins right after it). A frame with a gap is dropped — never
handed to a decoder — and :attr:`FrameAssembler.keyframe_needed` is set; frames
that are not keyframes are dropped too until a keyframe arrives (their
reference is gone). ``_build`` raising ValueError (a malformed payload) counts
as ``malformed`` and drops the frame the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: a frame of more packets is given up (2048 × 1200 bytes ≈ 2.4 MB, far above any frame we take):
#: a sender that never ends a frame cannot make us hold its packets without bound
MAX_PACKETS_PER_FRAME = 2048


@dataclass
class Frame:
    """One reassembled frame: ``data`` is what the decoder takes."""

    timestamp: int
    data: bytes
    keyframe: bool


@dataclass
class DepacketizerStats:
    frames: int = 0
    dropped: int = 0               # frames given up for a missing packet or a missing reference
    malformed: int = 0             # frames whose payloads do not parse (counted, dropped)
    keyframes: int = 0
    late: int = 0                  # packets for a frame already emitted or dropped


class FrameAssembler:
    codec = "video"

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.stats = DepacketizerStats()
        self.keyframe_needed = True           # nothing decodable before the first keyframe
        self._frames: dict[int, dict[int, tuple[bool, bytes]]] = {}   # ts → seq → (marker, payload)
        self._next_seq: int | None = None      # first sequence number of the next frame
        self._highest: int | None = None       # highest (extended) sequence number seen
        self._done_ts: set[int] = set()

    def _build(self, ts: int, payloads: list[bytes]) -> Frame:
        raise NotImplementedError

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        cand = (self._highest & ~0xFFFF) | seq
        if cand - self._highest > 0x8000:
            cand -= 0x10000
        elif self._highest - cand > 0x8000:
            cand += 0x10000
        self._highest = max(self._highest, cand)
        return cand

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> list[Frame]:
        """Take one RTP packet; returns the frames it completed (in order; often none)."""
        ext = self._extend(seq & 0xFFFF)
        if timestamp in self._done_ts or (self._next_seq is not None and ext < self._next_seq):
            self.stats.late += 1
            return []
        pkts = self._frames.setdefault(timestamp, {})
        pkts[ext] = (bool(marker), bytes(payload))
        if len(pkts) > MAX_PACKETS_PER_FRAME:
            log.debug("%s frame at ts %d has more than %d packets: dropped", self.codec, timestamp,
                      MAX_PACKETS_PER_FRAME)
            self._forget(timestamp)
            self.stats.dropped += 1
            self.keyframe_needed = True
            self._next_seq = max(pkts) + 1
        return self._drain()

    def _drain(self) -> list[Frame]:
        out: list[Frame] = []
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
                frame = self._finish(ts, [pkts[s][1] for s in seqs])
                if frame is not None:
                    out.append(frame)
                self._next_seq = seqs[-1] + 1
                continue
            # incomplete: wait for reordered packets, unless the stream has moved on too far
            if self._highest is not None and self._highest - seqs[-1] <= self.window and len(order) < 3:
                break
            self._forget(ts)
            self.stats.dropped += 1
            self.keyframe_needed = True
            self._next_seq = seqs[-1] + 1
        return out

    def _forget(self, ts: int) -> None:
        self._frames.pop(ts, None)
        self._done_ts.add(ts)
        if len(self._done_ts) > 64:
            self._done_ts = set(sorted(self._done_ts)[-32:])

    def _finish(self, ts: int, payloads: list[bytes]) -> Frame | None:
        self._forget(ts)
        try:
            frame = self._build(ts, payloads)
        except ValueError as exc:
            log.debug("%s frame at ts %d dropped: %s", self.codec, ts, exc)
            self.stats.malformed += 1
            self.stats.dropped += 1
            self.keyframe_needed = True
            return None
        if frame.keyframe:
            self.keyframe_needed = False
            self.stats.keyframes += 1
        elif self.keyframe_needed:
            self.stats.dropped += 1      # its reference is gone: not decodable
            return None
        self.stats.frames += 1
        return frame
