"""Adaptive audio jitter buffer, one per leg, drained once per mixer tick.

Model
-----
Frames are kept by *extended* sequence number (16-bit wrap unfolded) and played
strictly in sequence order, one per ``get()``. The buffer has three states:

* ``idle``     nothing received yet (or after ``reset()``): ``get`` → "empty".
* ``waiting``  prefetch: after start, after an underrun and after a talk-spurt
  end, play-out waits until the buffered span reaches the *target delay* (or
  the first waiting packet is ``target`` old). Meanwhile ``get`` says "lost"
  (caller conceals) when we ran dry in the middle of speech, "silence" when
  the sender stopped / is in DTX, and "empty" after a long gap (> 1 s).
* ``playing``  one frame per tick: "frame"; a hole in the sequence with later
  frames present is "lost" (with the next payload for in-band FEC).

Adaptation
----------
Two figures steer the delay.

*Prefetch target* ``clamp(peak_jitter + frame, min, max)``: ``peak_jitter``
follows the largest recent change of transit time between consecutive packets:
it jumps up at once on a spike and decays by 0.5 % per packet (about 3 s
half-life at 50 packets/s). Play-out (re)starts when the buffered span exceeds
the target or the first waiting packet is ``target`` old: at start, after an
underrun, after a talk-spurt end.

*Slack*: every frame played records how long it waited here (play time minus
arrival); over a window of ``_SHED_WINDOW`` frames (0.5 s) the smallest wait is
the margin the worst-timed packet of the window had. If even the worst packet of
the last ten windows (5 s) waited more than one frame plus a guard, every frame
could have been played a tick earlier, and one frame is shed
(``drift_adjustments``): a quiet one if one comes within a second (``AudioStream``
decodes the frame and, if it is quiet, calls ``shed()`` to drop the next), else
the next one anyway. In a stream's first 10 s it is shed at once, and the first
second's waits are not part of the history (start-up is not typical): the
start-up delay goes within ~2 s of a call. So the delay converges to "the latest
packet of the last 5 s just makes its tick", whatever the phase between the
sender's clock and our tick; a sender whose clock runs fast is handled by the
same rule.

*Guard*: 2 ms to start with. A frame that play-out ran dry for and that then
arrives raises it to how late the frame came plus the slack frames usually had
(the spread of arrival times is kept in hand); a packet that arrives after its
frame was given up adds a quarter frame; at most one frame. A raised guard holds
5 s, then decays towards 2 ms (half-life ~5 s): a stream whose packets are late
every few seconds settles a tick deeper instead of oscillating, and the delay a
one-off spike added goes again within ~15 s. A packet *lost* in mid-stream is
concealed and play-out goes on on the same schedule when the next one comes:
loss costs no delay.

The delay also grows where it costs nothing audible (prefetch after an underrun
or a silence, stretching DTX gaps) and shrinks by skipping silence at a
talk-spurt start. A slow sender drains the buffer; the underrun is concealed
and the prefetch restores the target depth.

Talk spurts / DTX: a packet with the marker bit (RFC 3551 §4.1) whose timestamp
jumps past the previous frame, or any jump > 4 frames, starts a talk spurt;
the gap before it is silence, never loss.

Packet duration: ``frame_ticks`` is the sender's packet duration and
``get()`` is to be called once per packet duration. It starts as configured;
when three consecutive in-order packets step their timestamps by another amount
(a sender using 10, 30 or 40 ms packets whatever the SDP said), the buffer
takes that as the packet duration (``frame_ticks``, ``frame_ms``, counted in
``retimed``) and calls ``on_retime(frame_ticks)``: the caller re-frames the
decoded audio to its own frame size (``AudioStream`` does). Packets whose step
differed are counted in ``ptime_mismatch``.

Resync: a jump of more than 1000 sequence numbers (20 s of audio) is taken as
a new stream once the next packet confirms it (RFC 3550 A.1 style); the
buffer resets. On an SSRC change the caller should call ``reset()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["JitterBuffer", "JitterStats"]

_RESYNC_JUMP = 1000
_SHED_WINDOW = 25  # frames played (0.5 s at 20 ms) per look at the smallest wait (slack)
_SLACK_HISTORY = 10  # windows (5 s) whose smallest waits all have to allow a shed
_GUARD_MIN_MS = 2.0  # slack kept above one frame before a frame is shed
_GUARD_HOLD = 10  # windows (5 s) a raised guard is kept before it decays
_GUARD_DECAY = 0.93  # then per window: guard = min + (guard - min) * decay (half-life ~5 s)
_SHED_FORCE = 50  # frames (1 s): a frame to shed that no quiet moment took is dropped anyway
_YOUNG = 500  # frames (10 s): a new stream sheds its start-up delay at once, quiet or not
_SETTLE = 50  # frames (1 s): start-up (first encodes, bursts) is not part of the slack history
_LONG_GAP_S = 1.0
_MAX_CONCEAL_TICKS = 3  # consecutive concealments while waiting before switching to silence
_PEAK_DECAY = 0.995
_PLAYED_WINDOW = 256

IDLE, WAITING, PLAYING = 0, 1, 2


@dataclass(slots=True)
class JitterStats:
    depth_ms: float = 0.0  # current target delay
    current_ms: float = 0.0  # what is buffered ahead of play-out now
    jitter_ms: float = 0.0  # peak interarrival jitter estimate driving the target
    buffered: int = 0  # packets held
    played: int = 0
    late: int = 0  # arrived after their play-out time (dropped)
    lost: int = 0  # sequence numbers that never arrived in time
    concealed: int = 0  # get() answers "lost" (holes + underruns)
    silence: int = 0  # get() answers "silence"
    duplicates: int = 0
    reordered: int = 0
    overflows: int = 0  # frames dropped because the buffer exceeded max delay
    drift_adjustments: int = 0  # frames dropped because every frame of a window waited > 1 frame + guard
    guard_ms: float = 0.0  # slack kept when shedding (grows with underruns and late packets)
    slack_ms: float = 0.0  # smallest wait of a played frame in the last full window
    delay_ms: float = 0.0  # how long played frames wait here, on average (recent, ~1 s)
    underruns: int = 0
    resyncs: int = 0
    ptime_mismatch: int = 0
    retimed: int = 0  # times the packet duration was changed to what the sender sends


class JitterBuffer:
    """Adaptive jitter buffer for one audio stream (see module docstring)."""

    def __init__(
        self,
        clock_rate: int,
        frame_ticks: int,
        min_delay_ms: float = 20,
        max_delay_ms: float = 200,
        initial_delay_ms: float = 40,
    ) -> None:
        if clock_rate <= 0 or frame_ticks <= 0:
            raise ValueError(
                f"jitter buffer needs a positive clock rate and frame size, got "
                f"{clock_rate} Hz / {frame_ticks} ticks"
            )
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(f"jitter buffer delays must satisfy 0 <= min ({min_delay_ms}) <= max ({max_delay_ms})")
        self.clock_rate = clock_rate
        self.frame_ticks = frame_ticks
        self.frame_ms = frame_ticks * 1000.0 / clock_rate
        self._ms_per_tick = 1000.0 / clock_rate
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        self.initial_delay_ms = min(max(float(initial_delay_ms), self.min_delay_ms), self.max_delay_ms)
        self._max_frames = max(2, int(self.max_delay_ms / self.frame_ms + 0.999) + 1)
        self._stats = JitterStats()
        self._delay = 0.0  # smoothed wait of played frames, seconds
        #: called with the new packet duration (RTP clock ticks) when the sender's differs
        self.on_retime: Callable[[int], None] | None = None
        self._odd_step = 0  # a packet duration other than frame_ticks, and how often in a row
        self._odd_count = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything buffered (new source). Statistics are kept."""
        self._frames: dict[int, tuple[int, bytes, bool, float]] = {}
        self._state = IDLE
        self._highest = 0  # extended seq of the newest packet
        self._next = 0  # extended seq to play next
        self._last_ts = 0  # timestamp of the newest in-order packet
        self._last_arrival = 0.0
        self._ref_ts = 0  # previous packet in arrival order (jitter estimate)
        self._ref_arrival = 0.0
        self._played_ts: int | None = None  # timestamp of the last frame played
        self._played = [-1] * _PLAYED_WINDOW
        self._peak_ms = max(0.0, self.initial_delay_ms - self.frame_ms)
        self._target_ms = self.initial_delay_ms
        self._target_frames = self._frames_for(self._target_ms)
        self._wait_since: float | None = None
        self._underrun = False
        self._conceal_run = 0
        self._gap_seq = -1  # talk-spurt start being stretched
        self._gap_left = 0
        self._window_slack = 1e9  # smallest (play time - arrival) in this window, seconds
        self._slack_hist: list[float] = []  # the last windows' smallest waits, seconds
        self._window_ticks = 0
        self._guard_ms = _GUARD_MIN_MS
        self._guard_hold = 0
        self._shed_wait = -1  # >= 0: one frame is to be shed (frames played since decided)
        self._played_at_reset = self._stats.played
        self._dry_at = 0.0  # when play-out last ran dry
        self._resync_expect = -1
        self._skip: set[int] = set()  # sequence numbers used by non-audio packets (RFC 4733 events)

    def skip(self, seq: int) -> None:
        """A packet of this stream's sequence space that carries no audio (an RFC 4733 event
        shares the audio's SSRC and sequence numbers): its number is not a lost frame. The
        audio timestamps jump over the event, which then plays as a short silence."""
        if self._state == IDLE:
            return
        ext = self._highest + (((seq - self._highest + 32768) & 0xFFFF) - 32768)
        if ext >= self._next and ext not in self._frames and len(self._skip) < 256:
            self._skip.add(ext)

    def _frames_for(self, ms: float) -> int:
        return max(1, int(ms / self.frame_ms + 0.999))

    @property
    def stats(self) -> JitterStats:
        st = self._stats
        st.depth_ms = self._target_ms
        st.jitter_ms = self._peak_ms
        st.buffered = len(self._frames)
        st.guard_ms = self._guard_ms
        st.delay_ms = self._delay * 1000.0
        span = self._highest - self._next + 1 if self._state != IDLE else 0
        st.current_ms = max(0, span) * self.frame_ms
        return st

    # ------------------------------------------------------------ put
    def put(self, seq: int, timestamp: int, payload: bytes, arrival: float, marker: bool = False) -> None:
        frames = self._frames
        if self._state == IDLE:
            ext = (1 << 20) + seq
            self._highest = self._next = ext
            self._last_ts = self._ref_ts = timestamp
            self._last_arrival = self._ref_arrival = arrival
            self._state = WAITING
            self._wait_since = arrival
            self._underrun = False
            frames[ext] = (timestamp, payload, marker, arrival)
            return
        hi = self._highest
        delta = ((seq - hi + 32768) & 0xFFFF) - 32768
        ext = hi + delta
        if -_RESYNC_JUMP <= delta <= _RESYNC_JUMP:
            # RFC 3550 A.8 style: transit change against the previous packet in
            # *arrival* order (so reordering counts as jitter), in ms
            dts = ((timestamp - self._ref_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (arrival - self._ref_arrival) * 1000.0 - dts * self._ms_per_tick
            self._ref_ts = timestamp
            self._ref_arrival = arrival
            if d < 0:
                d = -d
            if d > self.max_delay_ms:
                d = self.max_delay_ms
            peak = self._peak_ms
            if d > peak:
                peak = d
            else:
                peak = peak * _PEAK_DECAY + d * (1.0 - _PEAK_DECAY)
            self._peak_ms = peak
            t = peak + self.frame_ms
            if t < self.min_delay_ms:
                t = self.min_delay_ms
            elif t > self.max_delay_ms:
                t = self.max_delay_ms
            if t != self._target_ms:
                self._target_ms = t
                self._target_frames = self._frames_for(t)
        if delta > 0:
            if delta > _RESYNC_JUMP:
                self._maybe_resync(seq, timestamp, payload, arrival, marker)
                return
            if delta == 1 and not marker:
                step = ((timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                if step != self.frame_ticks and 0 < step <= 4 * self.frame_ticks:
                    self._stats.ptime_mismatch += 1
                    if step == self._odd_step:
                        self._odd_count += 1
                        if self._odd_count >= 3:
                            self._retime(step)
                    else:
                        self._odd_step, self._odd_count = step, 1
                elif self._odd_count:
                    self._odd_count = 0
            self._highest = ext
            self._last_ts = timestamp
            self._last_arrival = arrival
            self._resync_expect = -1
        elif ext < self._next:
            if delta < -_RESYNC_JUMP:
                self._maybe_resync(seq, timestamp, payload, arrival, marker)
                return
            if self._played[ext % _PLAYED_WINDOW] == ext:
                self._stats.duplicates += 1
            else:
                self._stats.late += 1
                self._bump_guard()
            return
        elif ext in frames:
            self._stats.duplicates += 1
            return
        else:
            self._stats.reordered += 1
        frames[ext] = (timestamp, payload, marker, arrival)
        if self._state == WAITING:
            if self._wait_since is None:
                self._wait_since = arrival
            if self._underrun and ext == self._next:
                # the frame play-out ran dry for came this much after its tick; frames
                # usually had slack_ms to spare: keep the difference (+ the minimum) in hand
                late_by = (arrival - self._dry_at) * 1000.0
                self._raise_guard(late_by + min(self._stats.slack_ms, self.frame_ms) + _GUARD_MIN_MS)
        if self._highest - self._next + 1 > self._max_frames:
            self._overflow()

    def _maybe_resync(self, seq: int, timestamp: int, payload: bytes, arrival: float, marker: bool) -> None:
        if seq == self._resync_expect:
            self._stats.resyncs += 1
            self.reset()
            # the previous packet of the new stream was dropped; start from this one
            self.put(seq, timestamp, payload, arrival, marker)
        else:
            self._resync_expect = (seq + 1) & 0xFFFF
            self._stats.late += 1

    def _retime(self, ticks: int) -> None:
        self.frame_ticks = ticks
        self.frame_ms = ticks * 1000.0 / self.clock_rate
        self._max_frames = max(2, int(self.max_delay_ms / self.frame_ms + 0.999) + 1)
        self._target_frames = self._frames_for(self._target_ms)
        self._odd_count = 0
        self._stats.retimed += 1
        if self.on_retime is not None:
            self.on_retime(ticks)

    def _bump_guard(self) -> None:
        self._raise_guard(self._guard_ms + self.frame_ms / 4)

    def _raise_guard(self, ms: float) -> None:
        if ms > self.frame_ms:
            ms = self.frame_ms
        if ms > self._guard_ms:
            self._guard_ms = ms
        self._guard_hold = _GUARD_HOLD

    def _overflow(self) -> None:
        frames = self._frames
        while self._highest - self._next + 1 > self._max_frames:
            frames.pop(self._next, None)
            self._next += 1
            self._stats.overflows += 1

    # ------------------------------------------------------------ get
    def get(self, now: float) -> tuple[str, bytes | None]:
        state = self._state
        st = self._stats
        if state == PLAYING:
            return self._play(now)
        if state == IDLE:
            return ("empty", None)
        # WAITING (prefetch)
        frames = self._frames
        if frames and self._underrun:
            nxt = self._next
            first = frames.get(nxt)
            if first is not None and not self._is_spurt_start(first):
                # the frame we ran dry for came late: play it now - the delay grows by
                # the ticks concealed meanwhile (and the guard remembers how late it was)
                return self._resume(nxt, now)
            if first is None and self._highest >= nxt + self._conceal_run:
                # a *later* frame is here: the missing ones were lost, not a pause. Resume
                # on the old schedule - the frame due this tick is ``vnext`` (one slot per
                # tick concealed since) - so a loss costs no delay.
                vnext = nxt + self._conceal_run
                if vnext in frames:
                    for e in range(nxt, vnext):
                        if frames.pop(e, None) is None:
                            st.lost += 1  # (if it comes after all, it is late)
                        else:
                            st.late += 1  # (a copy that comes later is a duplicate)
                            self._played[e % _PLAYED_WINDOW] = e
                    if self._played_ts is not None:
                        self._played_ts = (self._played_ts + self._conceal_run * self.frame_ticks) & 0xFFFFFFFF
                    return self._resume(vnext, now)
                if self._conceal_run < self._max_frames:
                    self._conceal_run += 1
                    st.concealed += 1
                    following = frames.get(vnext + 1)
                    return ("lost", following[1] if following is not None else None)
        if frames:
            span = self._highest - self._next + 1
            ws = self._wait_since
            if span > self._target_frames or (ws is not None and (now - ws) * 1000.0 >= self._target_ms - 0.5):
                self._state = PLAYING
                self._underrun = False
                self._conceal_run = 0
                self._gap_seq = self._next  # the silence is spent: no stretching
                self._gap_left = 0
                return self._play(now)
            first = frames.get(self._next)
            if first is not None and self._is_spurt_start(first):
                self._underrun = False
        if self._underrun and self._conceal_run < _MAX_CONCEAL_TICKS:
            self._conceal_run += 1
            st.concealed += 1
            return ("lost", None)
        self._underrun = False
        if not frames and now - self._last_arrival > _LONG_GAP_S:
            return ("empty", None)
        st.silence += 1
        return ("silence", None)

    def _resume(self, nxt: int, now: float) -> tuple[str, bytes | None]:
        self._next = nxt
        self._state = PLAYING
        self._underrun = False
        self._conceal_run = 0
        self._gap_seq = nxt
        self._gap_left = 0
        return self._play(now)

    @property
    def shed_wanted(self) -> bool:
        """One frame is to be shed (every frame of the last window waited more than a frame
        plus the guard) and the next frame is here: if the frame just played was quiet,
        call :meth:`shed` to drop the next one where a listener cannot hear it."""
        return self._shed_wait >= 0 and self._state == PLAYING and self._next in self._frames

    def shed(self) -> bytes | None:
        """Take the next frame out of play-out (see :attr:`shed_wanted`); returns its
        payload so a stateful decoder can still decode it, or ``None`` if there is none."""
        if not self.shed_wanted:
            return None
        nxt = self._next
        pkt = self._frames.pop(nxt)
        self._played[nxt % _PLAYED_WINDOW] = nxt
        self._played_ts = pkt[0]
        self._next = nxt + 1
        self._shed_done()
        return pkt[1]

    def _shed_done(self) -> None:
        # every frame from now on plays a frame earlier: so would have the ones remembered
        self._stats.drift_adjustments += 1
        self._shed_wait = -1
        f = self.frame_ms / 1000.0
        self._slack_hist = [x - f for x in self._slack_hist]
        self._window_slack -= f

    def _is_spurt_start(self, pkt: tuple[int, bytes, bool, float]) -> bool:
        if self._played_ts is None:
            return True
        dts = ((pkt[0] - self._played_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        return (pkt[2] and dts > self.frame_ticks) or dts > 4 * self.frame_ticks

    def _play(self, now: float) -> tuple[str, bytes | None]:
        frames = self._frames
        st = self._stats
        nxt = self._next
        pkt = frames.get(nxt)
        if pkt is None and self._skip:
            skip = self._skip
            while nxt in skip:  # numbers spent on DTMF events: not holes
                skip.discard(nxt)
                nxt += 1
            skip.difference_update([n for n in skip if n < nxt])
            self._next = nxt
            pkt = frames.get(nxt)
        if pkt is not None:
            span = self._highest - nxt + 1
            # a talk spurt starts: the DTX gap before it is ours to stretch or skip
            # (inlined _is_spurt_start: this runs for every frame of every leg)
            played_ts = self._played_ts
            if self._gap_seq != nxt and played_ts is not None:
                dts = ((pkt[0] - played_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                ft = self.frame_ticks
                if (pkt[2] and dts > ft) or dts > 4 * ft:
                    self._gap_seq = nxt
                    self._gap_left = min(dts // ft - 1, self._max_frames)
            if self._gap_seq == nxt and self._gap_left > 0 and span <= self._target_frames:
                self._gap_left -= 1
                st.silence += 1
                return ("silence", None)
            del frames[nxt]
            self._next = nxt + 1
            self._played[nxt % _PLAYED_WINDOW] = nxt
            self._played_ts = pkt[0]
            st.played += 1
            # slack: if every frame of the window waited more than a frame + guard, play
            # one frame earlier from now on (drop one); see the module docstring
            slack = now - pkt[3]
            self._delay += (slack - self._delay) * 0.02
            if slack < self._window_slack:
                self._window_slack = slack
            self._window_ticks += 1
            if self._window_ticks >= _SHED_WINDOW:
                hist = self._slack_hist
                age = st.played - self._played_at_reset
                if age > _SETTLE:  # (the first second of a call is not typical: skipped)
                    hist.append(self._window_slack)
                    if len(hist) > _SLACK_HISTORY:
                        del hist[0]
                st.slack_ms = self._window_slack * 1000.0
                if hist and min(hist) * 1000.0 >= self.frame_ms + self._guard_ms:
                    if self._shed_wait < 0:
                        self._shed_wait = 0
                else:
                    self._shed_wait = -1
                if self._guard_hold > 0:
                    self._guard_hold -= 1
                elif self._guard_ms > _GUARD_MIN_MS:
                    self._guard_ms = _GUARD_MIN_MS + (self._guard_ms - _GUARD_MIN_MS) * _GUARD_DECAY
                self._window_slack = 1e9
                self._window_ticks = 0
            if self._shed_wait >= 0:
                # a frame is to be shed: AudioStream sheds a quiet one (shed()); a stream
                # that is never quiet loses one anyway after _SHED_FORCE frames
                self._shed_wait += 1
                force = _SHED_FORCE if st.played - self._played_at_reset > _YOUNG else 0
                if self._shed_wait > force and (nxt + 1) in frames:
                    dropped = frames.pop(nxt + 1)
                    self._played[(nxt + 1) % _PLAYED_WINDOW] = nxt + 1
                    self._played_ts = dropped[0]
                    self._next = nxt + 2
                    self._shed_done()
            return ("frame", pkt[1])
        if frames:
            # a hole: the frame never arrived in time
            self._next = nxt + 1
            self._played_ts = (self._played_ts + self.frame_ticks) & 0xFFFFFFFF if self._played_ts is not None else None
            st.lost += 1
            st.concealed += 1
            following = frames.get(nxt + 1)
            return ("lost", following[1] if following is not None else None)
        # ran dry: late packets (underrun, conceal) or the sender stopped (silence)
        self._state = WAITING
        self._wait_since = None
        self._window_slack = 1e9
        self._window_ticks = 0
        self._shed_wait = -1
        self._dry_at = now
        # Whether the next packet is late or the sender went quiet cannot be told
        # yet (both empty the buffer about one target delay after the last
        # arrival): conceal a few ticks, then call it silence.
        self._underrun = True
        self._conceal_run = 1
        st.underruns += 1
        st.concealed += 1
        return ("lost", None)
