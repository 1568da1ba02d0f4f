"""Keyframe requests to a shared encoder: coalesced and rate-limited.

Receivers ask for keyframes in four forms (RTCP PLI and FIR, SIP INFO
picture_fast_update, H.245 videoFastUpdatePicture) and, after a loss on a busy
network, many at once. An encoder that several legs share forces at most one
IDR per ``min_interval`` (500 ms): the first request is served on the next
frame; requests that come while the interval runs are coalesced into one IDR at
its end, so nobody waits longer than the interval and a storm costs at most
two IDRs a second (FreeSWITCH keeps 250 ms between key frames, mediasoup one
PLI every two seconds per producer: see ../shared/VIDEO-WEBRTC.md).
"""
from __future__ import annotations

import time
from collections.abc import Callable


class KeyframeGate:
    def __init__(self, min_interval: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.clock = clock
        self._last: float | None = None          # when the last keyframe was sent
        self._pending = False
        self.requests = 0
        self.granted = 0

    def request(self) -> None:
        """A receiver wants a keyframe."""
        self.requests += 1
        self._pending = True

    def sent(self, keyframe: bool) -> None:
        """The encoder produced a frame (a keyframe of its own, e.g. its first, counts too)."""
        if keyframe:
            self._last = self.clock()
            self._pending = False

    def wanted(self) -> bool:
        """Whether the next frame must be a keyframe (call once per frame, before encoding)."""
        if not self._pending:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.min_interval:
            return False
        self.granted += 1
        return True
