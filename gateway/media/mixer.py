"""The audio mixer: loudest-N speaker selection, mix-minus, shared encoder groups.

Internal audio format
---------------------
Everything inside the mixer is **16 kHz mono signed 16-bit PCM in 20 ms
frames (320 samples)** — "wideband":

* G.722, the best audio codec of the legacy H.323 room systems we bridge,
  is a 16 kHz codec, so those legs need no resampling at all;
* Opus encodes and decodes at 16 kHz natively (libopus resamples internally
  only if asked for 48 kHz), so WebRTC legs need no resampler either;
* only G.711 legs (8 kHz) resample, and upsampling 8 → 16 kHz is cheap;
* a 16 kHz frame is a third of a 48 kHz frame: every per-member operation
  (level, mix, limiter) costs a third.

Per tick (every 20 ms, driven by :class:`gateway.media.clock.MediaClock`):

1. pull every member's *level* (mean square): a :class:`LevelSource` (e.g.
   ``AudioStream``) decodes at its codec's own rate and skips resampling, a
   plain :class:`AudioSource` is pulled and measured; the 16 kHz frame is asked
   for only from the selected speakers (step 5) — decode only what is heard;
2. (levels are weighted by each member's gain / mute);
3. voice activity with hysteresis: a member starts *speaking* after
   ``onset_frames`` frames above the threshold and keeps speaking for a
   hangover (``hangover_ms``) after the level drops, so selection never flaps
   on the gaps between words. "Above" means above ``threshold_dbfs`` (−42) *and*
   ``noise_margin_db`` (9 dB) above the member's own noise floor - or simply
   above ``loud_dbfs`` (−30). The floor is the lowest level of the last
   ~2 s (minimum statistics: four half-second windows): the pauses between
   words keep it at the room's noise, while a commune room's steady fan or hum
   (say −35 dBFS) is its own floor within ~2 s, stops counting as speech and is
   not mixed into everyone's audio; a talker, or loud programme audio, still is;
4. select the loudest ``max_speakers`` speaking members (incumbents get a
   small bonus, ties go to who started speaking first);
5. mix = sum of their gain-applied frames in int32, through a limiter
   (instant attack, slow release, then a saturating clip: never wrap-around);
6. **everyone hears everyone but themselves**: each selected speaker gets its
   own mix-minus (mix − own frame) through its own encoder; every other member
   gets the same full mix, encoded **once per encoder key** (same codec, ptime,
   bitrate) and the same payload delivered to everyone in the group; members
   muted-out get encoded silence from one shared silence encoder per key, so
   their RTP keeps flowing. So the encode cost is (keys + speakers), not N.

The mixer knows nothing of RTP or signalling: a sink is anything with an
``encoder_key``, ``make_encoder()`` and ``deliver(payload, timestamp_step)``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Protocol, runtime_checkable

import numpy as np

from gateway.repeated import RepeatedLog

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

RATE = 16000
FRAME_MS = 20
FULL_SCALE = 32768.0
_DT16 = np.dtype(np.int16)


@runtime_checkable
class Encoder(Protocol):
    """An audio encoder at the internal rate: one 20 ms int16 frame in, one payload out."""

    samples_per_packet_rtp: int

    def encode(self, pcm: np.ndarray) -> bytes: ...


@runtime_checkable
class AudioSource(Protocol):
    """One participant's incoming audio."""

    def pull(self) -> np.ndarray | None:
        """The next 20 ms: int16, 320 samples at 16 kHz; ``None`` for nothing/silence/DTX."""
        ...


@runtime_checkable
class LevelSource(Protocol):
    """An :class:`AudioSource` that can say how loud its frame is before making it.

    The mixer uses this when a source has it: every member is asked for its level
    each tick, and only the few selected speakers for their 16 kHz frame — so a
    decoder can skip resampling (or more) for members nobody hears.
    """

    def pull_level(self) -> float | None:
        """Advance one tick; the frame's mean square in int16² units (``None``: nothing/DTX)."""
        ...

    def frame(self) -> np.ndarray:
        """This tick's frame (int16, 320 samples at 16 kHz); only after ``pull_level`` gave a level."""
        ...


class _EagerSource:
    """Adapts a plain :class:`AudioSource` to the level-first path: pull, check, measure."""

    __slots__ = ("_pull", "_mixer", "_member", "_f")

    def __init__(self, mixer: "AudioMixer", member: "MixerMember") -> None:
        self._pull = member.source.pull
        self._mixer = mixer
        self._member = member
        self._f: np.ndarray | None = None

    def pull_level(self) -> float | None:
        f = self._pull()
        if f is None:
            self._f = None
            return None
        mx = self._mixer
        if f.__class__ is not np.ndarray or f.dtype is not _DT16 or f.shape != (mx.frame_samples,):
            f = mx._coerce(self._member, f)
        self._f = f
        x = f.astype(np.float32)
        return float(np.dot(x, x)) / x.size

    def frame(self) -> np.ndarray:
        return self._f if self._f is not None else self._mixer._zeros


@runtime_checkable
class AudioSink(Protocol):
    """One participant's outgoing audio."""

    #: participants with equal keys (same codec, ptime, bitrate) can share one encoded stream
    encoder_key: Hashable

    def make_encoder(self) -> Encoder: ...

    def deliver(self, payload: bytes, timestamp_step: int) -> None:
        """Send one encoded packet (the RTP layer owns seq/timestamp continuity)."""
        ...


@dataclass(eq=False)
class MixerMember:
    """One member of a mix. Level/onset/hangover live in the mixer's numpy arrays (slot ``_slot``)."""

    id: str
    source: AudioSource
    sink: AudioSink
    gain_db: float = 0.0
    mute_in: bool = False
    mute_out: bool = False
    speaking: bool = False
    #: mixer tick at which the current talk spurt started (ties go to the earliest)
    speaking_since: int = 0
    _slot: int = field(default=-1, repr=False)
    _encoder: Encoder | None = field(default=None, repr=False)
    _encoder_used: int = field(default=0, repr=False)


class MixerStats:
    """Counters for the dashboard and benchmarks. ``tick_time_us_*`` cover the whole tick."""

    RING = 512

    def __init__(self) -> None:
        self.ticks = 0
        self.encodes_per_tick = 0
        self.shared_groups = 0
        self.speakers = 0
        self._times = np.zeros(self.RING, dtype=np.float64)

    def _record(self, us: float) -> None:
        self._times[self.ticks % self.RING] = us
        self.ticks += 1

    def _recent(self) -> np.ndarray:
        return self._times[: min(self.ticks, self.RING)]

    @property
    def tick_time_us_p50(self) -> float:
        r = self._recent()
        return float(np.percentile(r, 50)) if r.size else 0.0

    @property
    def tick_time_us_p99(self) -> float:
        r = self._recent()
        return float(np.percentile(r, 99)) if r.size else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "tick_time_us_p50": round(self.tick_time_us_p50, 1),
            "tick_time_us_p99": round(self.tick_time_us_p99, 1),
            "encodes_per_tick": self.encodes_per_tick,
            "shared_groups": self.shared_groups,
            "speakers": self.speakers,
        }


def db_to_power(db: float) -> float:
    return 10.0 ** (db / 10.0)


_FLOOR_WINDOWS = 4  # the noise floor is the lowest level of the last four windows (+ this one)


class AudioMixer:
    """Mixes one room. Call :meth:`tick` every 20 ms."""

    #: a current speaker keeps its place unless a newcomer is this much louder (power ratio, 3 dB)
    INCUMBENT_BONUS = 2.0
    #: limiter ceiling for the full mix, and release per frame (≈ 6 dB in 100 ms)
    LIMIT = 32000.0
    RELEASE_PER_FRAME = 10.0 ** (6.0 / 20.0 / 5.0)
    #: ticks of the full mix a new speaker's own encoder is primed with (see _prime)
    PRIME_FRAMES = 10
    #: per-speaker encoders are kept this long after a member stops being a speaker
    ENCODER_IDLE_TICKS = 250

    def __init__(
        self,
        max_speakers: int = 3,
        rate: int = RATE,
        frame_ms: int = FRAME_MS,
        on_speaking: Callable[[str, bool], None] | None = None,
        on_dominant: Callable[[str | None], None] | None = None,
        *,
        threshold_dbfs: float = -42.0,
        noise_margin_db: float = 9.0,
        loud_dbfs: float = -30.0,
        onset_frames: int = 2,
        hangover_ms: int = 400,
        dominant_hold_ms: int = 300,
        smoothing: float = 0.7,
    ) -> None:
        if max_speakers < 1:
            raise ValueError(f"max_speakers must be at least 1, got {max_speakers}")
        if rate <= 0 or frame_ms <= 0 or (rate * frame_ms) % 1000:
            raise ValueError(f"rate {rate} Hz and frame_ms {frame_ms} must give a whole number of samples")
        self.max_speakers = max_speakers
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_samples = rate * frame_ms // 1000
        self.on_speaking = on_speaking
        self.on_dominant = on_dominant
        self.threshold_dbfs = threshold_dbfs
        self._threshold_ms = (FULL_SCALE ** 2) * db_to_power(threshold_dbfs)
        self._noise_margin = db_to_power(noise_margin_db)
        self._loud_ms = (FULL_SCALE ** 2) * db_to_power(loud_dbfs)
        self._floor_window = max(1, round(500 / frame_ms))  # frames per minimum-statistics window
        self.onset_frames = max(1, onset_frames)
        self.hangover_frames = max(1, round(hangover_ms / frame_ms))
        self.dominant_hold_frames = max(1, round(dominant_hold_ms / frame_ms))
        self._alpha = float(smoothing)

        self.members: dict[str, MixerMember] = {}
        self._order: list[MixerMember] = []  # slot i -> member
        self._pulls: list[Callable[[], float | None]] = []  # slot -> pull_level
        self._frame_fns: list[Callable[[], np.ndarray]] = []  # slot -> frame
        self._levels: list[float] = []  # this tick's mean squares, by slot (0: nothing)
        cap = 16
        F = self.frame_samples
        self._weight = np.ones(cap, dtype=np.float64)  # power gain, 0 when mute_in
        self._gain = np.ones(cap, dtype=np.float64)  # amplitude gain
        self._smooth = np.zeros(cap, dtype=np.float64)
        # noise floor per member (mean square): the minimum over the last _FLOOR_WINDOWS
        # windows (ring) and the current one (cur); see _detect
        self._floor = np.full(cap, self._threshold_ms)
        self._floor_ring = np.full((cap, _FLOOR_WINDOWS), self._threshold_ms)
        self._floor_cur = np.full(cap, np.inf)
        self._floor_idx = 0
        self._onset = np.zeros(cap, dtype=np.int32)
        self._hang = np.zeros(cap, dtype=np.int32)
        self._speaking = np.zeros(cap, dtype=bool)

        self.speakers: list[str] = []
        self._selected: list[MixerMember] = []
        self.dominant: str | None = None
        self._dom_candidate: str | None = None
        self._dom_count = 0

        self._shared_enc: dict[Hashable, Encoder | None] = {}
        self._silence_enc: dict[Hashable, Encoder | None] = {}
        self._groups_dirty = True
        self._mix_groups: list[tuple[Hashable, list[Callable[[bytes, int], None]]]] = []
        self._silence_groups: list[tuple[Hashable, list[Callable[[bytes, int], None]]]] = []
        self._speaker_outs: list[MixerMember] = []

        self._lim_gain = 1.0
        self._ramp = np.arange(1, F + 1, dtype=np.float64) / F
        self._zeros = np.zeros(F, dtype=np.int16)
        self._zeros.flags.writeable = False
        self._tick_no = 0
        self._heard_ring: tuple[np.ndarray, ...] = ()  # the full mixes of the last PRIME_FRAMES ticks
        self._encodes = 0
        self._warned = RepeatedLog(log)   # recurring problems: logged once, then one in every 500
        self.stats = MixerStats()

    # ------------------------------------------------------------------ members
    def add(self, member_id: str, source: AudioSource, sink: AudioSink) -> MixerMember:
        """Add a member (its audio is heard by others once it speaks; it hears the mix at once)."""
        if member_id in self.members:
            raise ValueError(f"mixer member {member_id!r} is already in the mix")
        try:
            hash(sink.encoder_key)
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"sink of {member_id!r} needs a hashable encoder_key: {exc}") from None
        m = MixerMember(member_id, source, sink)
        n = len(self._order)
        if n >= self._weight.shape[0]:
            self._grow(2 * self._weight.shape[0])
        m._slot = n
        self._order.append(m)
        lazy = source if callable(getattr(source, "pull_level", None)) and callable(
            getattr(source, "frame", None)) else _EagerSource(self, m)
        self._pulls.append(lazy.pull_level)
        self._frame_fns.append(lazy.frame)
        self._weight[n] = 1.0
        self._gain[n] = 1.0
        self._smooth[n] = 0.0
        self._floor[n] = self._threshold_ms
        self._floor_ring[n] = self._threshold_ms
        self._floor_cur[n] = np.inf
        self._onset[n] = 0
        self._hang[n] = 0
        self._speaking[n] = False
        self.members[member_id] = m
        self._groups_dirty = True
        return m

    def remove(self, member_id: str) -> None:
        """Remove a member; unknown ids are ignored (idempotent)."""
        m = self.members.pop(member_id, None)
        if m is None:
            return
        i, last = m._slot, len(self._order) - 1
        if i != last:
            lm = self._order[last]
            self._order[i] = lm
            self._pulls[i] = self._pulls[last]
            self._frame_fns[i] = self._frame_fns[last]
            for arr in (self._weight, self._gain, self._smooth, self._floor, self._floor_ring,
                        self._floor_cur, self._onset, self._hang, self._speaking):
                arr[i] = arr[last]
            lm._slot = i
        self._order.pop()
        self._pulls.pop()
        self._frame_fns.pop()
        self._levels = []
        m._slot = -1
        m._encoder = None
        was_speaking = m.speaking
        if m in self._selected:
            self._selected.remove(m)
            self.speakers = [s.id for s in self._selected]
        key = m.sink.encoder_key
        if not any(o.sink.encoder_key == key for o in self._order):
            self._shared_enc.pop(key, None)
            self._silence_enc.pop(key, None)
        self._groups_dirty = True
        if was_speaking:
            m.speaking = False
            self._emit_speaking(member_id, False)
        if self.dominant == member_id:
            self._set_dominant(self._selected[0].id if self._selected else None)

    def set_mute(self, member_id: str, *, mute_in: bool | None = None, mute_out: bool | None = None) -> None:
        """mute_in: nobody hears this member; mute_out: this member hears silence (RTP keeps flowing)."""
        m = self._member(member_id)
        if mute_out is not None and bool(mute_out) != m.mute_out:
            m.mute_out = bool(mute_out)
            self._groups_dirty = True
        if mute_in is not None and bool(mute_in) != m.mute_in:
            m.mute_in = bool(mute_in)
            self._update_weight(m)
            if m.mute_in:
                i = m._slot
                self._onset[i] = 0
                self._hang[i] = 0
                self._smooth[i] = 0.0
                if m.speaking:
                    self._speaking[i] = False
                    m.speaking = False
                    self._emit_speaking(m.id, False)
                if m in self._selected:
                    self._selected.remove(m)
                    self.speakers = [s.id for s in self._selected]
                    self._groups_dirty = True
                if self.dominant == m.id:
                    self._set_dominant(self._selected[0].id if self._selected else None)

    def set_gain(self, member_id: str, gain_db: float) -> None:
        """Gain applied to what this member sends into the mix (clamped to ±30 dB)."""
        m = self._member(member_id)
        g = float(gain_db)
        if not math.isfinite(g):
            raise ValueError(f"gain for {member_id!r} must be a finite number of dB, got {gain_db!r}")
        m.gain_db = max(-30.0, min(30.0, g))
        self._update_weight(m)

    def levels(self) -> dict[str, float]:
        """Smoothed level per member in dBFS (−inf when silent), for rosters and dashboards."""
        out = {}
        for m in self._order:
            s = self._smooth[m._slot]
            out[m.id] = 10.0 * math.log10(s / FULL_SCALE**2) if s > 0 else float("-inf")
        return out

    def __len__(self) -> int:
        return len(self._order)

    # --------------------------------------------------------------- internals
    def _member(self, member_id: str) -> MixerMember:
        try:
            return self.members[member_id]
        except KeyError:
            raise KeyError(f"no mixer member {member_id!r}") from None

    def _update_weight(self, m: MixerMember) -> None:
        amp = 10.0 ** (m.gain_db / 20.0)
        self._gain[m._slot] = amp
        self._weight[m._slot] = 0.0 if m.mute_in else amp * amp

    def _grow(self, cap: int) -> None:
        def grow(a: np.ndarray) -> np.ndarray:
            b = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
            b[: a.shape[0]] = a
            return b

        self._weight = grow(self._weight)
        self._gain = grow(self._gain)
        self._smooth = grow(self._smooth)
        self._floor = grow(self._floor)
        self._floor_ring = grow(self._floor_ring)
        self._floor_cur = grow(self._floor_cur)
        self._onset = grow(self._onset)
        self._hang = grow(self._hang)
        self._speaking = grow(self._speaking)

    def _warn(self, key: Hashable, msg: str, *args: Any, exc: bool = False) -> None:
        """Log the first occurrence of a recurring problem, then one in every 500."""
        self._warned(key, logging.WARNING, msg, *args, exc_info=exc)

    def _emit_speaking(self, member_id: str, on: bool) -> None:
        if self.on_speaking is not None:
            try:
                self.on_speaking(member_id, on)
            except Exception:
                log.exception("on_speaking callback failed for %s", member_id)

    def _set_dominant(self, member_id: str | None) -> None:
        self._dom_candidate = None
        self._dom_count = 0
        if member_id == self.dominant:
            return
        self.dominant = member_id
        if self.on_dominant is not None:
            try:
                self.on_dominant(member_id)
            except Exception:
                log.exception("on_dominant callback failed for %s", member_id)

    def _pull_failed(self, i: int) -> np.ndarray:
        m = self._order[i]
        self._warn(("pull", m.id), "mixer: audio source of %s failed", m.id, exc=True)
        return self._zeros

    def _heard_frame(self, m: MixerMember, frame: Callable[[], np.ndarray]) -> np.ndarray:
        """A selected member's frame for this tick (a broken source adds nothing)."""
        try:
            f = frame()
        except Exception:
            self._warn(("frame", m.id), "mixer: audio source of %s failed to give its frame", m.id, exc=True)
            return self._zeros
        if f.__class__ is not np.ndarray or f.dtype is not _DT16 or f.shape != (self.frame_samples,):
            f = self._coerce(m, f)
        return f

    def _coerce(self, m: MixerMember, f: Any) -> np.ndarray:
        """Accept slightly wrong frames (other int dtype, 2-D) and drop the rest with a warning."""
        try:
            a = np.asarray(f)
            if a.size != self.frame_samples:
                self._warn(("shape", m.id), "mixer: %s sent %d samples, expected %d; frame dropped",
                           m.id, a.size, self.frame_samples)
                return self._zeros
            a = a.reshape(self.frame_samples)
            if a.dtype != np.int16:
                if a.dtype.kind not in "iu":
                    self._warn(("dtype", m.id), "mixer: %s sent %s samples, expected int16; frame dropped",
                               m.id, a.dtype)
                    return self._zeros
                a = np.clip(a, -32768, 32767).astype(np.int16)
            return a
        except Exception:
            self._warn(("bad", m.id), "mixer: %s sent an unusable frame %r; dropped", m.id, type(f))
            return self._zeros

    def _encoder_for_key(self, table: dict, key: Hashable, sink: AudioSink) -> Encoder | None:
        if key in table:
            return table[key]
        try:
            enc = sink.make_encoder()
        except Exception:
            self._warn(("mkenc", key), "mixer: cannot make an encoder for %r", key, exc=True)
            enc = None
        table[key] = enc
        return enc

    def _rebuild_groups(self) -> None:
        selected = set(self._selected)
        mix: dict[Hashable, list] = {}
        sil: dict[Hashable, list] = {}
        outs = []
        for m in self._order:
            key = m.sink.encoder_key
            if m.mute_out:
                sil.setdefault(key, []).append(m)
            elif m in selected:
                outs.append(m)
            else:
                mix.setdefault(key, []).append(m)
        for key, ms in mix.items():
            self._encoder_for_key(self._shared_enc, key, ms[0].sink)
        for key, ms in sil.items():
            self._encoder_for_key(self._silence_enc, key, ms[0].sink)
        self._mix_groups = [(k, [m.sink.deliver for m in ms]) for k, ms in mix.items()]
        self._silence_groups = [(k, [m.sink.deliver for m in ms]) for k, ms in sil.items()]
        self._speaker_outs = outs
        self._groups_dirty = False

    def _encode(self, enc: Encoder | None, pcm: np.ndarray, key: Hashable) -> tuple[bytes, int] | None:
        if enc is None:
            return None
        try:
            payload = enc.encode(pcm)
            step = enc.samples_per_packet_rtp
        except Exception:
            self._warn(("enc", key), "mixer: encoder for %r failed", key, exc=True)
            return None
        self._encodes += 1
        if not payload:  # an encoder with ptime > 20 ms buffers
            return None
        return payload, step

    def _deliver(self, deliver: Callable[[bytes, int], None], out: tuple[bytes, int]) -> None:
        try:
            deliver(out[0], out[1])
        except Exception:
            self._warn(("deliver", id(getattr(deliver, "__self__", deliver))),
                       "mixer: delivering to %r failed", deliver, exc=True)

    # -------------------------------------------------------------------- tick
    def tick(self) -> None:
        """Mix one frame for everyone."""
        t0 = time.perf_counter()
        self._tick_no += 1
        self._encodes = 0
        n = len(self._order)
        # 1. pull every member's level; frames are made later, for the selected few only.
        #    Nothing/DTX is level 0 (the shared zero frame: adds nothing)
        levels: list = []
        append = levels.append
        for pull in self._pulls:
            try:
                v = pull()
            except Exception:  # each source is pulled exactly once per tick, even if one fails
                self._pull_failed(len(levels))
                v = None
            append(0.0 if v is None else v)
        self._levels = levels

        if n:
            self._detect(n)
        self._select(n)
        if self._groups_dirty:
            self._rebuild_groups()
        self._mix_and_send()

        st = self.stats
        st.encodes_per_tick = self._encodes
        st.shared_groups = len(self._mix_groups) + len(self._silence_groups)
        st.speakers = len(self._selected)
        if self._tick_no % 50 == 0:
            self._expire_encoders()
        st._record((time.perf_counter() - t0) * 1e6)

    def _detect(self, n: int) -> None:
        """Levels and voice activity with onset + hangover hysteresis, vectorised over members."""
        ms = np.array(self._levels, dtype=np.float64)
        ms *= self._weight[:n]
        sm = self._smooth[:n]
        sm *= self._alpha
        sm += (1.0 - self._alpha) * ms
        cur = self._floor_cur[:n]
        floor = np.minimum(self._floor[:n], cur)
        above = (ms > self._threshold_ms) & ((ms > floor * self._noise_margin) | (ms > self._loud_ms))
        np.minimum(cur, ms, out=cur)  # the noise floor: minimum statistics
        if self._tick_no % self._floor_window == 0:
            ring = self._floor_ring
            ring[:n, self._floor_idx] = cur
            self._floor_idx = (self._floor_idx + 1) % _FLOOR_WINDOWS
            self._floor[:n] = ring[:n].min(axis=1)
            cur[:] = np.inf
        onset = self._onset[:n]
        onset += 1
        onset *= above
        speaking = self._speaking[:n]
        now = speaking | (onset >= self.onset_frames)
        hang = self._hang[:n]
        hang -= 1
        np.maximum(hang, 0, out=hang)
        hang[above & now] = self.hangover_frames
        now &= above | (hang > 0)
        changed = np.flatnonzero(now != speaking)
        speaking[:] = now
        for i in changed.tolist():
            m = self._order[i]
            m.speaking = bool(now[i])
            if m.speaking:
                m.speaking_since = self._tick_no
            self._emit_speaking(m.id, m.speaking)

    def _select(self, n: int) -> None:
        cand = np.flatnonzero(self._speaking[:n]).tolist() if n else []
        order, sm = self._order, self._smooth
        prev = self._selected
        new: list[MixerMember] = []
        if cand:
            bonus = self.INCUMBENT_BONUS
            scored = []
            for i in cand:
                m = order[i]
                s = sm[i] * (bonus if m in prev else 1.0)
                scored.append((-s, m.speaking_since, i))
            scored.sort()
            new = [order[i] for _, _, i in scored[: self.max_speakers]]
        if new != prev:
            if set(new) != set(prev):
                self._groups_dirty = True
                for m in new:
                    if m._encoder is None:
                        try:
                            m._encoder = m.sink.make_encoder()
                        except Exception:
                            self._warn(("mkenc", m.id), "mixer: cannot make an encoder for %s", m.id, exc=True)
            self._selected = new
            self.speakers = [m.id for m in new]
        # dominant speaker: the loudest selected one, switched only after it stays loudest a while
        if new:
            loudest = max(new, key=lambda m: sm[m._slot]).id
            if self.dominant is None or self.dominant not in self.members or not self.members[self.dominant].speaking:
                self._set_dominant(loudest)
            elif loudest == self.dominant:
                self._dom_candidate, self._dom_count = None, 0
            elif loudest == self._dom_candidate:
                self._dom_count += 1
                if self._dom_count >= self.dominant_hold_frames:
                    self._set_dominant(loudest)
            else:
                self._dom_candidate, self._dom_count = loudest, 1

    def _limit(self, x: np.ndarray, g0: float, g1: float, bound: float) -> np.ndarray:
        """Scale int32 ``x`` by the limiter gain (g0 → g1 over the frame) and saturate to int16.

        ``bound`` is an upper bound of ``|x|``: when the scaled bound fits, the clip is skipped.
        """
        if g0 == 1.0 and g1 == 1.0:
            y = x
        elif g1 <= g0:
            y = x * g1  # instant attack: the whole frame is known, no overshoot
        else:
            y = x * (g0 + (g1 - g0) * self._ramp)  # smooth release
        if bound * max(g0, g1) > 32767.0:
            y = np.minimum(np.maximum(y, -32768), 32767)  # saturate, never wrap around
        return y.astype(np.int16)

    def _mix_and_send(self) -> None:
        sel = self._selected
        contribs: list[np.ndarray | None] = []
        peak = 0.0
        if sel:
            mix32 = np.zeros(self.frame_samples, dtype=np.int32)
            levels, frame_fns = self._levels, self._frame_fns
            for m in sel:
                i = m._slot
                f = self._heard_frame(m, frame_fns[i]) if levels[i] > 0.0 else self._zeros
                if f is self._zeros:
                    contribs.append(None)
                    continue
                g = self._gain[m._slot]
                c = f.astype(np.int32) if g == 1.0 else np.rint(f * g).astype(np.int32)
                mix32 += c
                contribs.append(c)
            peak = float(np.abs(mix32).max())
            target = min(1.0, self.LIMIT / peak) if peak > 0 else 1.0
            g0 = self._lim_gain
            g1 = target if target < g0 else min(target, g0 * self.RELEASE_PER_FRAME, 1.0)
            self._lim_gain = g1
            # g0 and g1 never exceed LIMIT/peak (attack is instant, release stops at the target),
            # so the scaled full mix stays within ±LIMIT: no clip needed
            full = self._limit(mix32, g0, g1, 0.0)
        else:
            mix32 = None
            self._lim_gain = min(1.0, self._lim_gain * self.RELEASE_PER_FRAME)
            full = self._zeros
        heard_before = self._heard_ring  # the full mixes of the last ticks (before this one)
        self._heard_ring = heard_before[1:] + (full,) if len(heard_before) >= self.PRIME_FRAMES else heard_before + (full,)

        for groups, table, pcm in ((self._mix_groups, self._shared_enc, full),
                                   (self._silence_groups, self._silence_enc, self._zeros)):
            for key, delivers in groups:
                out = self._encode(table.get(key), pcm, key)
                if out is None:
                    continue
                payload, step = out
                for d in delivers:
                    try:
                        d(payload, step)
                    except Exception:
                        self._warn(("deliver", id(getattr(d, "__self__", d))),
                                   "mixer: delivering to %r failed", d, exc=True)
        if self._speaker_outs:
            own = {m: c for m, c in zip(sel, contribs)}
            g1 = self._lim_gain
            for m in self._speaker_outs:
                c = own.get(m)
                if mix32 is None:
                    pcm = self._zeros
                elif c is None:
                    pcm = full
                else:
                    # |mix - own| <= |mix| + |own|
                    pcm = self._limit(mix32 - c, g1, g1, peak + float(np.abs(c).max()))
                if m._encoder_used != self._tick_no - 1:
                    self._prime(m, (self._zeros,) if m.mute_out else heard_before)
                m._encoder_used = self._tick_no
                out = self._encode(m._encoder, pcm, m.id)
                if out is not None:
                    self._deliver(m.sink.deliver, out)

    def _prime(self, m: MixerMember, heard: tuple[np.ndarray, ...]) -> None:
        """A member starts getting its own mix-minus: run what it heard over the last
        ticks (from its group's shared encoder) through its own encoder first and throw
        the packets away, so the encoder's resampler and codec state (G.722's ADPCM
        adaptation, Opus's predictors) continue that sound instead of starting cold -
        otherwise the first packets click. (Not for encoders that gather several frames
        per packet: it would shift their packets.)"""
        enc = m._encoder
        if enc is None or getattr(enc, "ptime_ms", self.frame_ms) != self.frame_ms:
            return
        try:
            for pcm in heard:
                enc.encode(pcm)
        except Exception:
            self._warn(("enc", m.id), "mixer: encoder for %r failed", m.id, exc=True)

    def _expire_encoders(self) -> None:
        sel = set(self._selected)
        for m in self._order:
            if m._encoder is not None and m not in sel and self._tick_no - m._encoder_used > self.ENCODER_IDLE_TICKS:
                m._encoder = None
