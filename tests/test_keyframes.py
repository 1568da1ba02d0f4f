"""A keyframe request is served on the next frame; a storm of them costs at most two IDRs a second."""
from __future__ import annotations

from gateway.media.keyframes import KeyframeGate


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def frames(gate: KeyframeGate, clock: Clock, n: int, fps: int = 30, ask_every: int | None = None) -> list[int]:
    """Run ``n`` frames; a request before every ``ask_every``-th; returns the frame numbers made keyframes."""
    keys = []
    for i in range(n):
        if ask_every and i % ask_every == 0:
            gate.request()
        key = gate.wanted()
        gate.sent(key)
        if key:
            keys.append(i)
        clock.t += 1 / fps
    return keys


def test_a_request_is_served_on_the_next_frame():
    clock = Clock()
    gate = KeyframeGate(clock=clock)
    assert frames(gate, clock, 10) == []
    gate.request()
    assert gate.wanted() is True                 # within one frame interval
    gate.sent(True)
    assert gate.wanted() is False


def test_a_storm_of_requests_gives_at_most_two_keyframes_a_second_and_none_is_forgotten():
    clock = Clock()
    gate = KeyframeGate(clock=clock)
    keys = frames(gate, clock, 90, ask_every=1)   # every receiver of a big room asks on every frame, 3 s
    assert len(keys) <= 7 and keys[0] == 0
    assert all(b - a >= 15 for a, b in zip(keys, keys[1:]))        # ≥ 500 ms apart at 30 fps
    gate.request()                                # asked just after an IDR: served when the interval ends
    later = frames(gate, clock, 20)
    assert later and later[0] <= 15


def test_the_encoders_own_keyframe_satisfies_a_pending_request():
    clock = Clock()
    gate = KeyframeGate(clock=clock)
    gate.request()
    gate.sent(True)                               # e.g. a new encoder's first frame
    assert gate.wanted() is False and gate.requests == 1
