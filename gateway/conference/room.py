"""A Room: the legs in one meeting, their audio mix, their video and the roster."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol

from gateway.conference.events import Observable
from gateway.conference.leg import MUTE_DIRECTIONS, Leg
from gateway.media.mixer import AudioMixer
from gateway.media.quality import leg_quality
from gateway.media.video_mixer import VideoMixer

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))


class RoomSpecLike(Protocol):
    """What a room uses from the dial plan's RoomSpec (and nothing more)."""

    id: str
    name: str
    max_participants: int | None
    layout: Any


class JoinRefused(Exception):
    """A leg could not join. ``sip_status`` / ``q850_cause`` tell adapters how to reject the call."""

    sip_status = 480
    q850_cause = 18

    def __init__(self, room_id: str, reason: str) -> None:
        super().__init__(f"room {room_id}: {reason}")
        self.room_id = room_id
        self.reason = reason


class RoomFull(JoinRefused):
    """The room has max_participants legs already (SIP 486 Busy Here, Q.850 17 user busy)."""

    sip_status = 486
    q850_cause = 17


class RoomClosed(JoinRefused):
    """The room is closed (SIP 480 Temporarily Unavailable, Q.850 18 no user responding)."""

    sip_status = 480
    q850_cause = 18


class RoomLocked(JoinRefused):
    """The operator locked the room (SIP 403 Forbidden, Q.850 21 call rejected)."""

    sip_status = 403
    q850_cause = 21


class Room(Observable):
    """One meeting. Roster events: ``joined``(leg), ``left``(leg, reason),
    ``speaking``(leg, bool), ``dominant``(leg | None), ``closed``(reason)."""

    EVENTS = frozenset({"joined", "left", "speaking", "dominant", "closed", "locked", "muted", "layout"})

    def __init__(self, spec: RoomSpecLike, *, mixer: AudioMixer | None = None,
                 video: VideoMixer | None = None) -> None:
        room_id = getattr(spec, "id", None)
        if not isinstance(room_id, str) or not room_id:
            raise ValueError(f"a room needs a spec with a non-empty string id, got {room_id!r}")
        self.id: str = room_id
        self.spec = spec
        self.legs: dict[str, Leg] = {}
        self.mixer = mixer if mixer is not None else AudioMixer()
        self.mixer.on_speaking = self._on_speaking
        self.mixer.on_dominant = self._on_dominant
        if video is None:
            layout = getattr(spec, "layout", None)
            kw = {"max_size": getattr(spec, "max_resolution", None),
                  "labels": bool(getattr(spec, "video_labels", True))}
            try:
                video = VideoMixer(layout if isinstance(layout, str) else "cp-2x2", **kw)
            except ValueError:
                log.warning("room %s: layout %r unknown, using cp-2x2", room_id, layout)
                video = VideoMixer("cp-2x2", **kw)
        self.video = video
        self.created_at = time.time()
        self.closed = False
        self.close_reason: str | None = None
        self.locked = False          # the operator's lock: nobody new joins
        self._joined_at: dict[str, float] = {}
        self._unsubs: dict[str, list[Callable[[], None]]] = {}
        self._muted: dict[str, list[bool]] = {}  # leg id -> [in, out]

    def __repr__(self) -> str:
        return f"<Room {self.id} {len(self.legs)} legs{' closed' if self.closed else ''}>"

    @property
    def name(self) -> str:
        return getattr(self.spec, "name", "") or self.id

    @property
    def max_participants(self) -> int | None:
        """None (or 0 in the spec) means unlimited."""
        n = getattr(self.spec, "max_participants", None)
        return n if isinstance(n, int) and n > 0 else None

    # ---------------------------------------------------------------- events
    def _emit(self, event: str, *args: Any) -> None:
        self._notify(event, *args)

    # ------------------------------------------------------------ membership
    def join(self, leg: Leg) -> None:
        """Add ``leg``; raises RoomClosed / RoomFull (adapters turn them into rejects)."""
        if self.closed:
            raise RoomClosed(self.id, f"closed ({self.close_reason or 'no reason'})")
        if leg.hung_up:
            raise ValueError(f"leg {leg.id} has already hung up ({leg.hangup_reason!r}); it cannot join {self.id}")
        if leg.id in self.legs:
            if self.legs[leg.id] is not leg:
                raise ValueError(f"room {self.id} already has a different leg with id {leg.id!r}")
            return
        limit = self.max_participants
        if limit is not None and len(self.legs) >= limit:
            raise RoomFull(self.id, f"full ({limit} participants)")
        if self.locked:
            raise RoomLocked(self.id, "locked by the operator: nobody new may join")
        audio = leg.audio
        if audio is not None and audio.source is not None and audio.sink is not None:
            self.mixer.add(leg.id, audio.source, audio.sink)
        self._add_video(leg)
        self.legs[leg.id] = leg
        self._joined_at[leg.id] = time.time()
        self._muted[leg.id] = [False, False]
        self._unsubs[leg.id] = [
            leg.on("hangup", lambda reason="", _leg=leg: self.leave(_leg, reason)),
            leg.on("mute", lambda direction="in", on=True, _leg=leg: self._on_leg_mute(_leg, direction, on)),
            leg.on("keyframe_request", lambda stream="video", _leg=leg: self._on_keyframe_request(_leg, stream)),
            leg.on("bitrate_limit", lambda stream="video", kbps=None, _leg=leg:
                   self._on_bitrate_limit(_leg, stream, kbps)),
        ]
        leg.state = "joined"
        log.info("room %s: %s joined (%s %s)", self.id, leg.id, leg.protocol, leg.remote)
        self._emit("joined", leg)

    def replace_stream(self, leg: Leg, stream_id: str = "audio") -> None:
        """A stream's source/sink changed (a codec renegotiated mid-call): swap them in place,
        keeping mute and gain, with no roster events (nobody left or joined)."""
        if self.legs.get(leg.id) is not leg:
            return
        stream = leg.streams.get(stream_id)
        if (stream.kind if stream is not None else stream_id) == "video":
            self._add_video(leg)          # video added, removed or changed: the picture follows
            return
        old = self.mixer.members.get(leg.id)
        self.mixer.remove(leg.id)
        if stream is None or stream.source is None or stream.sink is None:
            return
        self.mixer.add(leg.id, stream.source, stream.sink)
        if old is not None:
            self.mixer.set_mute(leg.id, mute_in=old.mute_in, mute_out=old.mute_out)
            self.mixer.set_gain(leg.id, old.gain_db)

    def leave(self, leg: Leg | str, reason: str = "") -> None:
        """Remove a leg (idempotent). The leg stays connected: use ``leg.hangup`` or :meth:`kick` to end it."""
        leg_id = leg if isinstance(leg, str) else leg.id
        found = self.legs.pop(leg_id, None)
        if found is None:
            return
        for unsub in self._unsubs.pop(leg_id, ()):
            unsub()
        self.mixer.remove(leg_id)
        self.video.remove(leg_id)
        self._joined_at.pop(leg_id, None)
        self._muted.pop(leg_id, None)
        found.state = "left"
        log.info("room %s: %s left (%s)", self.id, leg_id, reason or "no reason")
        self._emit("left", found, reason)

    def kick(self, leg_id: str, reason: str = "removed by the operator") -> None:
        """Hang up a participant (their adapter sends BYE / ReleaseComplete)."""
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.hangup(reason)
            self.leave(leg, reason)

    def set_mute(self, leg_id: str, *, mute_in: bool | None = None, mute_out: bool | None = None) -> None:
        """Operator mute; also tells the leg (``mute`` event) so the adapter can signal it."""
        leg = self.legs.get(leg_id)
        if leg is None:
            raise KeyError(f"room {self.id} has no leg {leg_id!r}")
        if mute_in is not None:
            leg.emit("mute", direction="in", on=bool(mute_in))
        if mute_out is not None:
            leg.emit("mute", direction="out", on=bool(mute_out))

    def _on_leg_mute(self, leg: Leg, direction: str, on: bool) -> None:
        flags = self._muted.get(leg.id)
        if flags is None:
            return
        if direction not in MUTE_DIRECTIONS:
            log.warning("room %s: %s sent mute with unknown direction %r (expected in/out/both)",
                        self.id, leg.id, direction)
            return
        on = bool(on)
        kw: dict[str, bool] = {}
        if direction in ("in", "both"):
            flags[0] = on
            kw["mute_in"] = on
        if direction in ("out", "both"):
            flags[1] = on
            kw["mute_out"] = on
        if leg.id in self.mixer.members:
            self.mixer.set_mute(leg.id, **kw)
        self._emit("muted", leg, flags[0], flags[1])

    # --------------------------------------------------------------- mixer
    def _on_speaking(self, member_id: str, on: bool) -> None:
        self.video.speaking(member_id, on)
        leg = self.legs.get(member_id)
        if leg is not None:
            self._emit("speaking", leg, on)

    def _on_dominant(self, member_id: str | None) -> None:
        self.video.set_dominant(member_id)
        self._emit("dominant", self.legs.get(member_id) if member_id else None)

    def tick(self) -> None:
        """One 20 ms media tick (subscribed to the MediaClock by the registry)."""
        if not self.closed:
            self.mixer.tick()

    def video_tick(self) -> None:
        """One video tick (subscribed to the video clock by the registry)."""
        if not self.closed:
            self.video.tick()

    # ----------------------------------------------------------------- video
    def _add_video(self, leg: Leg) -> None:
        v = leg.video
        source = v.source if v is not None and v.receives else None
        sink = v.sink if v is not None and v.sends else None
        self.video.add(leg.id, source, sink, leg.display_name)

    def _on_keyframe_request(self, leg: Leg, stream: str) -> None:
        s = leg.streams.get(stream)
        if s is not None and s.kind == "video":
            self.video.keyframe_request(leg.id)

    def _on_bitrate_limit(self, leg: Leg, stream: str, kbps: int | None) -> None:
        s = leg.streams.get(stream)
        if s is not None and s.kind == "video":
            self.video.bitrate_limit(leg.id, kbps if isinstance(kbps, int) and kbps > 0 else None)

    def set_locked(self, locked: bool) -> None:
        """Lock (no one new joins; those in stay) or unlock the room."""
        self.locked = bool(locked)
        log.info("room %s: %s by the operator", self.id, "locked" if self.locked else "unlocked")
        self._emit("locked", self.locked)

    def set_layout(self, layout: str) -> None:
        """Change the video layout while the room runs (ValueError for an unknown one)."""
        self.video.set_layout(layout)
        log.info("room %s: layout %s", self.id, layout)
        self._emit("layout", layout)

    # ----------------------------------------------------------------- state
    def close(self, reason: str = "") -> None:
        """Hang up every leg with ``reason`` and close the room (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for leg in list(self.legs.values()):
            leg.hangup(reason)
            self.leave(leg, reason)
        self.video.close()
        log.info("room %s closed (%s)", self.id, reason or "no reason")
        self._emit("closed", reason)

    def roster(self) -> list[dict[str, Any]]:
        """The participants, JSON-serialisable, in join order."""
        out = []
        mixer = self.mixer
        for leg_id, leg in self.legs.items():
            m = mixer.members.get(leg_id)
            muted = self._muted.get(leg_id, [False, False])
            out.append({
                "id": leg.id,
                "name": leg.display_name,
                # the dial-plan endpoint the call provably comes from; None: an anonymous caller
                # (whatever name it gave) — see docs/security.md
                "identity": leg.identity,
                "encryption": dict(leg.encryption),
                "protocol": leg.protocol,
                "remote": leg.remote,
                "joined_at": self._joined_at.get(leg_id),
                "speaking": bool(m.speaking) if m else False,
                "dominant": mixer.dominant == leg_id,
                "muted": muted[0],
                "muted_out": muted[1],
                "audio": _codec(leg, "audio"),
                "video": _codec(leg, "video"),
                "streams": {sid: {"kind": st.kind, "direction": st.direction,
                                  "rx": str(st.rx) if st.rx else None, "tx": str(st.tx) if st.tx else None}
                            for sid, st in leg.streams.items()},
                "quality": _quality(leg),
                "video_media": self.video.member_stats(leg_id),
            })
        return out

    def info(self) -> dict[str, Any]:
        """Room summary for the API/dashboard."""
        return {
            "id": self.id,
            "name": self.name,
            "participants": len(self.legs),
            "max_participants": self.max_participants,
            "created_at": self.created_at,
            "speakers": list(self.mixer.speakers),
            "dominant": self.mixer.dominant,
            "closed": self.closed,
            "locked": self.locked,
            "mixer": self.mixer.stats.as_dict(),
            "video": self.video.info(),
        }


def _codec(leg: Leg, kind: str) -> str | None:
    s = leg.stream(kind)
    return s.tx.codec.name if s is not None and s.tx is not None else None


def _quality(leg: Leg) -> dict[str, Any] | None:
    """Loss, jitter, delay and estimated MOS both ways, for a leg with RTP audio."""
    audio = leg.audio
    if audio is None or audio.stats_provider is None:
        return None
    try:
        return leg_quality(audio.stats)
    except Exception:  # figures for a dashboard must never break the roster
        log.exception("quality figures for leg %s failed", leg.id)
        return None
