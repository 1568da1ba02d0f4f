"""A room's video: who is on screen, the pictures composed, one encoder per codec group.

Per video tick (the process's video clock, 30 per second) the mixer

1. decides the screen: in ``vas`` (voice-activated switching) the active
   speaker fills the picture and the speaker sees the previous speaker; in the
   ``cp-*`` layouts the cells are filled by who spoke most recently. Sources on
   screen are decoded; a source that comes on screen is asked for a keyframe;
   the others are only counted.
2. finds the encoder groups due a frame. Receivers that can take the same
   picture — the same view (the room's, or the VAS speaker's own) and the same
   :class:`~gateway.media.video_codecs.EncoderSettings` key (codec, size, frame
   rate, bitrate tier) — share one group: one encoder, one bitstream, and one
   packetizer per packetization (H.264 mode 0 / 1, RFC 2190, RFC 4629, VP8).
   The number of encoders grows with codecs and tiers, never with participants.
3. runs one *job* for the room in a worker thread (PyAV releases the GIL in
   FFmpeg): decode the frames that arrived, compose each picture size once,
   encode every due group, packetize. Jobs of one room never overlap (its
   codec contexts are used by one thread at a time); a tick that finds the
   room's job still running is counted as late and skipped.
4. back on the loop thread, gives each receiver its packetization's payloads;
   the receiver writes its own SSRC, sequence number and time stamp.

Keyframes: a receiver's request (RTCP PLI/FIR, SIP INFO, H.245) goes to its
group's :class:`~gateway.media.keyframes.KeyframeGate` (at most one IDR per
500 ms, coalesced), and so does a receiver joining a running group. Bitrate:
a receiver's limit (TMMBR, REMB, b=AS, flowControlCommand) moves it to a lower
tier's group, and back when the limit is lifted.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.media.keyframes import KeyframeGate
from gateway.media.labels import name_tile
from gateway.media.layout import LAYOUTS, Compositor, fill_order
from gateway.media.payload.h263 import parse_mb_info
from gateway.media.video_codecs import (CODEC_POOL, DecodeError, EncoderSettings, VideoDecoder, VideoEncoder,
                                        encoder_settings)
from gateway.media.video_stream import VideoReceiver, VideoSender, packetizer_for

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: the dial plan's names for layouts, as the compositor knows them
LAYOUT_ALIASES = {"voice-switched": "vas", "vas": "vas"}
#: what an operator may ask for (the dial plan's names)
LAYOUT_NAMES = ("voice-switched", "cp-2x2", "cp-3x3", "cp-1+5", "cp-1+7")
CLOCK = 90000
#: the second thread a room's job encodes on (see _job)
ENCODE_POOL: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cau-encode")


def layout_name(name: str) -> str:
    """The compositor's name for a dial-plan layout (``voice-switched`` → ``vas``); ValueError if unknown."""
    n = LAYOUT_ALIASES.get(name, name)
    if n not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected one of {', '.join(LAYOUT_NAMES)}")
    return n


@dataclass
class VideoMember:
    id: str
    name: str
    source: VideoReceiver | None
    sink: VideoSender | None
    joined: int


@dataclass(eq=False)
class EncoderGroup:
    view: str                                  # "room" or "self" (the VAS speaker's own picture)
    settings: EncoderSettings
    members: list[VideoSender] = field(default_factory=list)
    encoder: VideoEncoder | None = None        # made by the first job (worker thread)
    packetizers: dict[tuple[str, int], Any] = field(default_factory=dict)
    gate: KeyframeGate = field(default_factory=KeyframeGate)
    next_due: float = 0.0
    frames: int = 0
    keyframes: int = 0

    @property
    def name(self) -> str:
        s = self.settings
        return f"{s.codec} {s.width}x{s.height}@{s.fps:g} {s.kbps}k{' (speaker)' if self.view == 'self' else ''}"

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.view, self.settings.key)


@dataclass
class VideoMixerStats:
    ticks: int = 0
    jobs: int = 0
    late_ticks: int = 0            # a tick found the previous job still running: that frame is skipped
    job_errors: int = 0
    frames_composed: int = 0
    frames_encoded: int = 0
    job_ms: list[float] = field(default_factory=list)   # the last 256 jobs' durations

    def as_dict(self) -> dict[str, Any]:
        ms = sorted(self.job_ms)
        return {"ticks": self.ticks, "jobs": self.jobs, "late_ticks": self.late_ticks,
                "job_errors": self.job_errors, "frames_composed": self.frames_composed,
                "frames_encoded": self.frames_encoded,
                "job_ms_p50": round(ms[len(ms) // 2], 2) if ms else None,
                "job_ms_p95": round(ms[int(len(ms) * 0.95)], 2) if ms else None}


class VideoMixer:
    """One room's video (see the module's docstring).

    ``executor`` runs the jobs (default :data:`CODEC_POOL`; ``None`` runs them inline, for
    tests and benchmarks that want one thread); ``call_in_loop`` brings a finished job's result
    back to the loop thread (default ``reactor.callFromThread``)."""

    def __init__(self, layout: str = "cp-2x2", *, max_size: tuple[int, int] | None = None,
                 executor: Executor | None = CODEC_POOL, call_in_loop: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, highlight: bool = True, labels: bool = True) -> None:
        self.layout = layout_name(layout)
        self.max_size = max_size
        self.executor = executor
        if call_in_loop is None and executor is not None:
            from twisted.internet import reactor

            call_in_loop = reactor.callFromThread
        self.call_in_loop = call_in_loop
        self.clock = clock
        self.highlight = highlight
        #: names written under the tiles (participants without video always show theirs)
        self.labels = labels
        self.members: dict[str, VideoMember] = {}
        self.groups: dict[tuple[Any, ...], EncoderGroup] = {}
        self.last_spoke: dict[str, float] = {}
        self.dominant: str | None = None
        self.previous: str | None = None      # the speaker before the dominant one (what the dominant sees)
        self.stats = VideoMixerStats()
        self._compositors: dict[tuple[str, int, int], Compositor] = {}
        self._joins = 0
        self._busy = False
        self._t0 = clock()
        self.screen: dict[str, list[str | None]] = {}   # view → leg id per cell
        self.closed = False

    # -- membership --------------------------------------------------------------------------
    def add(self, member_id: str, source: VideoReceiver | None, sink: VideoSender | None, name: str = "") -> None:
        """A participant: its picture (``source``, None for audio-only), where ours goes (``sink``).
        Adding one who is here already changes their streams in place (a renegotiation: video
        added, removed or of another codec), keeping their place on screen."""
        m = self.members.get(member_id)
        if m is None:
            self._joins += 1
            m = self.members[member_id] = VideoMember(member_id, name or member_id, None, None, self._joins)
        if m.source is not None and m.source is not source:
            m.source.show(False)
        if m.sink is not None and m.sink is not sink:
            self._leave_group(m.sink)
        m.source, m.sink = source, sink
        if sink is not None and sink.group is None:
            self._regroup(sink, self._view_of(member_id))

    def remove(self, member_id: str) -> None:
        m = self.members.pop(member_id, None)
        if m is None:
            return
        if m.source is not None:
            m.source.show(False)
        if m.sink is not None:
            self._leave_group(m.sink)
        self.last_spoke.pop(member_id, None)
        if self.previous == member_id:
            self.previous = None
        if self.dominant == member_id:
            self.dominant = None
            self._views_changed()

    def set_layout(self, layout: str) -> None:
        """Change the layout while the room runs (every receiver gets a keyframe of the new picture)."""
        self.layout = layout_name(layout)
        # new compositors from the next tick on: a job still running keeps the old ones (never a
        # compositor changed under a worker thread that is drawing with it)
        self._compositors = {}
        self._views_changed()
        for g in self.groups.values():
            g.gate.request()

    # -- the room's audio tells us who speaks -------------------------------------------------
    def speaking(self, member_id: str, on: bool) -> None:
        if on and member_id in self.members:
            self.last_spoke[member_id] = self.clock()

    def set_dominant(self, member_id: str | None) -> None:
        if member_id == self.dominant or (member_id is not None and member_id not in self.members):
            return
        if self.dominant is not None:
            self.previous = self.dominant
        self.dominant = member_id
        if member_id is not None:
            self.last_spoke[member_id] = self.clock()
        self._views_changed()

    # -- far end → us --------------------------------------------------------------------------
    def keyframe_request(self, member_id: str) -> None:
        m = self.members.get(member_id)
        if m is not None and m.sink is not None:
            m.sink.keyframe_requests += 1
            if m.sink.group is not None:
                m.sink.group.gate.request()

    def bitrate_limit(self, member_id: str, kbps: int | None) -> None:
        m = self.members.get(member_id)
        if m is not None and m.sink is not None and m.sink.limit(kbps):
            self._regroup(m.sink, self._view_of(member_id))

    # -- groups ----------------------------------------------------------------------------------
    def _view_of(self, member_id: str) -> str:
        return "self" if self.layout == "vas" and member_id == self.dominant else "room"

    def _views_changed(self) -> None:
        for m in self.members.values():
            if m.sink is not None:
                view = self._view_of(m.id)
                if m.sink.group is None or m.sink.group.view != view:
                    self._regroup(m.sink, view)

    def _regroup(self, sink: VideoSender, view: str) -> None:
        try:
            settings = encoder_settings(sink.format, sink.tier_kbps, mtu=sink.mtu,
                                        max_size=self.max_size or sink.max_size)
        except Exception:
            log.exception("no encoder settings for %s", sink.format)
            return
        key = (view, settings.key)
        if sink.group is not None and sink.group.key == key:
            return
        self._leave_group(sink)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = EncoderGroup(view, settings, next_due=self.clock())
            log.info("video group %s opened", g.name)
        g.members.append(sink)
        sink.group = g
        g.gate.request()               # a receiver joining a group gets a keyframe

    def _leave_group(self, sink: VideoSender) -> None:
        g = sink.group
        sink.group = None
        if g is None:
            return
        if sink in g.members:
            g.members.remove(sink)
        if not g.members and self.groups.get(g.key) is g:
            del self.groups[g.key]
            log.info("video group %s closed", g.name)

    # -- the screen ------------------------------------------------------------------------------
    def _shown(self) -> dict[str, list[str | None]]:
        """view → member id per cell (None: empty)."""
        ids = list(self.members)
        if self.layout == "vas":
            order = fill_order(ids, self.last_spoke)
            main = self.dominant if self.dominant in self.members else (order[0] if order else None)
            prev = self.previous if self.previous in self.members and self.previous != main else \
                next((i for i in order if i != main), None)
            return {"room": [main], "self": [prev]}
        n = len(LAYOUTS[self.layout])
        order = fill_order(ids, self.last_spoke)[:n]
        return {"room": order + [None] * (n - len(order))}

    # -- the tick -----------------------------------------------------------------------------------
    def tick(self) -> None:
        """One video tick (the video clock's subscriber)."""
        if self.closed:
            return
        self.stats.ticks += 1
        screen = self._shown()
        self.screen = screen
        visible = {i for cells in screen.values() for i in cells if i is not None}
        for m in self.members.values():
            if m.source is not None:
                m.source.show(m.id in visible)
        if self._busy:
            self.stats.late_ticks += 1
            return
        now = self.clock()
        due = []
        for g in self.groups.values():
            interval = 1.0 / max(1.0, g.settings.fps)
            if now + 0.5 / 30 >= g.next_due:      # within half a tick of its due time
                g.next_due = g.next_due + interval if now - g.next_due < interval else now + interval
                due.append(g)
        decode = [(m.source, m.source.take()) for m in self.members.values()
                  if m.source is not None and m.source.on_screen]
        if not due:
            if any(frames for _, frames in decode):
                self._run(decode, [], [], now)
            return
        pts = int((now - self._t0) * CLOCK)
        compose: dict[tuple[str, int, int], tuple[Any, ...]] = {}
        encode = []
        for g in due:
            s = g.settings
            ckey = (g.view, s.width, s.height)
            if ckey not in compose:
                cells = screen.get(g.view, [])
                members = [self.members[i] if i is not None else None for i in cells]
                srcs = [m.source if m is not None else None for m in members]
                # who sends no picture (or none yet) shows a tile with their name instead
                standins = [name_tile(m.name) if m is not None and (m.source is None or m.source.latest is None)
                            else None for m in members]
                names = [m.name if m is not None and self.labels and standin is None else None
                         for m, standin in zip(members, standins)]
                active = cells.index(self.dominant) if self.dominant in cells else None
                compose[ckey] = (self._compositor(ckey), srcs, standins, names, active)
            keyframe = g.gate.wanted()
            packs = {(snd.packetization, snd.mtu) for snd in g.members}
            encode.append((g, ckey, keyframe, pts, packs))
        self._run(decode, list(compose.items()), encode, now)

    def _compositor(self, ckey: tuple[str, int, int]) -> Compositor:
        c = self._compositors.get(ckey)
        if c is None:
            view, w, h = ckey
            c = self._compositors[ckey] = Compositor(w, h, self.layout if view == "room" else "vas",
                                                     highlight=self.highlight)
        return c

    def _run(self, decode: list, compose: list, encode: list, now: float) -> None:
        self._busy = True
        self.stats.jobs += 1
        if self.executor is None:
            try:
                result = _job(decode, compose, encode)
            except Exception as exc:  # pragma: no cover - logged, never fatal
                result = exc
            self._done(result, now)
            return
        fut = self.executor.submit(_job, decode, compose, encode)
        assert self.call_in_loop is not None
        fut.add_done_callback(lambda f: self.call_in_loop(self._done, f.exception() or f.result(), now))

    def _done(self, result: Any, started: float) -> None:
        self._busy = False
        st = self.stats
        st.job_ms.append((self.clock() - started) * 1000)
        if len(st.job_ms) > 256:
            del st.job_ms[:-256]
        if isinstance(result, BaseException):
            st.job_errors += 1
            if st.job_errors == 1 or st.job_errors % 500 == 0:
                log.error("video job failed (%d so far)", st.job_errors, exc_info=result)
            return
        sent, broken, composed = result
        st.frames_composed += composed
        for src in broken:                          # did not decode: drop until a keyframe, ask for one
            src.depacketizer.keyframe_needed = True
            src.ask_keyframe()
        if self.closed:
            return
        for g, frames in sent:
            for ef, payloads in frames:
                g.gate.sent(ef.keyframe)
                g.frames += 1
                g.keyframes += ef.keyframe
                st.frames_encoded += 1
                for snd in list(g.members):
                    p = payloads.get((snd.packetization, snd.mtu))
                    if p is not None:
                        snd.send(p, ef.pts, ef.keyframe)

    def close(self) -> None:
        self.closed = True
        for m in list(self.members.values()):
            if m.source is not None:
                m.source.show(False)
        self.members.clear()
        self.groups.clear()

    def member_stats(self, member_id: str) -> dict[str, Any] | None:
        """One participant's video both ways (None without video): what we receive from them
        (``in``) and send them (``out``), with the encoder group they are in."""
        m = self.members.get(member_id)
        if m is None or (m.source is None and m.sink is None):
            return None
        return {"in": m.source.stats() if m.source is not None else None,
                "out": m.sink.stats() if m.sink is not None else None}

    def info(self) -> dict[str, Any]:
        return {"layout": self.layout, "screen": self.screen,
                "groups": [{"name": g.name, "receivers": len(g.members), "frames": g.frames,
                            "keyframes": g.keyframes, "keyframe_requests": g.gate.requests}
                           for g in self.groups.values()],
                **self.stats.as_dict()}


def _job(decode: list, compose: list, encode: list) -> tuple[list, list, int]:
    """Decode, compose, encode, packetize (a worker thread; one job per room at a time)."""
    broken = []
    now = time.monotonic()
    for src, frames in decode:
        for f in frames:
            if src.decoder is None:
                src.decoder = VideoDecoder(src.format.codec.name)
            try:
                pictures = src.decoder.decode(f.data)
            except DecodeError as exc:
                log.debug("%s did not decode: %s", src.format.codec.name, exc)
                src.decode_errors += 1
                src.decoder = None
                broken.append(src)
                break
            for p in pictures:
                src.decoded(p, now)
    pictures = {}
    for ckey, (comp, srcs, standins, names, active) in compose:
        tiles = [standin if standin is not None else s.latest if s is not None else None
                 for s, standin in zip(srcs, standins)]
        pictures[ckey] = comp.compose(tiles, active, names)
    # the groups' encoders run side by side: half of them (by pixels) on a helper thread
    # (FFmpeg releases the GIL), each encoder still used by one thread at a time
    sent: list = []
    if len(encode) > 1 and ENCODE_POOL is not None:
        order = sorted(encode, key=lambda e: -_cost(e[0].settings))
        mine, theirs, load = [], [], [0.0, 0.0]
        for e in order:
            side = 0 if load[0] <= load[1] else 1
            (mine if side == 0 else theirs).append(e)
            load[side] += _cost(e[0].settings)
        helper = ENCODE_POOL.submit(_encode_all, theirs, pictures)
        sent = _encode_all(mine, pictures) + helper.result()
    else:
        sent = _encode_all(encode, pictures)
    return sent, broken, len(pictures)


def _cost(s: EncoderSettings) -> float:
    return s.width * s.height * (1.5 if s.codec == "VP8" else 1.0 if s.codec == "H264" else 0.3)


def _encode_all(encode: list, pictures: dict) -> list:
    sent = []
    for g, ckey, keyframe, pts, packs in encode:
        if g.encoder is None:
            g.encoder = VideoEncoder(g.settings)
            keyframe = True
        out = []
        for ef in g.encoder.encode(pictures[ckey], pts, keyframe):
            payloads = {}
            for pack in packs:
                pz = g.packetizers.get(pack)
                if pz is None:
                    pz = g.packetizers[pack] = packetizer_for(*pack)
                try:
                    if pack[0][0] == "H263":
                        payloads[pack] = pz.packetize(ef.data, parse_mb_info(ef.mb_info))
                    else:
                        payloads[pack] = pz.packetize(ef.data)
                except ValueError as exc:
                    log.warning("video group %s: %s packetization failed: %s", g.name, pack, exc)
            out.append((ef, payloads))
        sent.append((g, out))
    return sent
