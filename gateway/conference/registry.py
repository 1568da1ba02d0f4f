"""The rooms in progress, driven by the dial plan.

A room is created on the first join for its ``spec.id`` (a template-instantiated
spec such as ``huyen-07`` too), subscribes to the process-wide MediaClock, and
is closed after it has been empty for ``grace_period`` seconds (a rejoin in
between cancels the close). A room keeps the spec it was created with: a dial
plan reload never affects rooms in progress.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from gateway.conference.events import Observable
from gateway.conference.leg import Leg
from gateway.conference.room import Room, RoomSpecLike
from gateway.media.clock import MediaClock
from gateway.media.mixer import AudioMixer

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))


class RoomRegistry(Observable):
    """Events: ``room_opened``(room), ``room_closed``(room), ``roster``(room, event, *args)
    where event/args are the room's own (``joined``, leg), (``left``, leg, reason), ..."""

    EVENTS = frozenset({"room_opened", "room_closed", "roster"})

    def __init__(
        self,
        clock: MediaClock | None,
        grace_period: float = 60.0,
        reactor: Any = None,
        *,
        mixer_factory: Callable[[RoomSpecLike], AudioMixer] | None = None,
        video_clock: MediaClock | None = None,
    ) -> None:
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0 seconds, got {grace_period!r}")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.clock = clock
        self.video_clock = video_clock
        self.grace_period = float(grace_period)
        self.reactor = reactor
        self.mixer_factory = mixer_factory
        self.rooms: dict[str, Room] = {}
        self._close_timers: dict[str, Any] = {}
        from gateway.guard import FailureGuard

        #: wrong room PINs, from every protocol (DTMF at the PIN prompt, a browser's PIN)
        self.pin_guard = FailureGuard("PIN", per_source=5, per_target=30)
        #: callers at a PIN prompt: room id -> their gates (they count against the room's seats)
        self.waiting: dict[str, set[Any]] = {}

    def waiting_count(self, room_id: str) -> int:
        return len(self.waiting.get(room_id, ()))

    # ---------------------------------------------------------------- events
    def _emit(self, event: str, *args: Any) -> None:
        self._notify(event, *args)

    # ----------------------------------------------------------------- rooms
    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    def join(self, spec: RoomSpecLike, leg: Leg) -> Room:
        """Get or create the room for ``spec.id`` and join ``leg`` (RoomFull/RoomClosed propagate)."""
        room_id = getattr(spec, "id", None)
        if not isinstance(room_id, str) or not room_id:
            raise ValueError(f"cannot join a room: its spec has no usable id ({room_id!r})")
        room = self.rooms.get(room_id)
        if room is None:
            room = self._open(spec)
        try:
            room.join(leg)
        except Exception:
            if not room.legs and not room.closed:
                self._arm_close(room)  # a room nobody managed to join must not linger
            raise
        return room

    def close(self, room_id: str, reason: str = "closed by the operator") -> bool:
        """Hang up everyone in the room with ``reason`` and close it. False if no such room."""
        room = self.rooms.get(room_id)
        if room is None:
            return False
        room.close(reason)
        return True

    def close_all(self, reason: str = "gateway shutting down") -> None:
        for room_id in list(self.rooms):
            self.close(room_id, reason)

    def _open(self, spec: RoomSpecLike) -> Room:
        mixer = self.mixer_factory(spec) if self.mixer_factory else None
        room = Room(spec, mixer=mixer)
        self.rooms[room.id] = room
        for ev in ("joined", "left", "speaking", "dominant", "locked", "muted", "layout"):
            room.on(ev, lambda *args, _ev=ev, _room=room: self._on_roster(_room, _ev, *args))
        room.on("closed", lambda reason="", _room=room: self._on_closed(_room, reason))
        if self.clock is not None:
            self.clock.subscribe(room.tick)
        if self.video_clock is not None:
            self.video_clock.subscribe(room.video_tick)
        log.info("room %s opened (%s)", room.id, room.name)
        self._emit("room_opened", room)
        return room

    def _on_roster(self, room: Room, event: str, *args: Any) -> None:
        if event == "joined":
            self._cancel_close(room.id)
        elif event == "left" and not room.legs and not room.closed:
            self._arm_close(room)
        self._emit("roster", room, event, *args)

    def _arm_close(self, room: Room) -> None:
        if room.id in self._close_timers:
            return
        self._close_timers[room.id] = self.reactor.callLater(self.grace_period, self._grace_expired, room)

    def _cancel_close(self, room_id: str) -> None:
        call = self._close_timers.pop(room_id, None)
        if call is not None and call.active():
            call.cancel()

    def _grace_expired(self, room: Room) -> None:
        self._close_timers.pop(room.id, None)
        if not room.legs and not room.closed:
            room.close("empty")

    def _on_closed(self, room: Room, reason: str) -> None:
        self._cancel_close(room.id)
        if self.clock is not None:
            self.clock.unsubscribe(room.tick)
        if self.video_clock is not None:
            self.video_clock.unsubscribe(room.video_tick)
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
        self._emit("room_closed", room)
