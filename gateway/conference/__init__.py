"""Conference core: rooms, legs, roster. Knows Legs, never a protocol."""
from gateway.conference.leg import Leg, MediaStream, StreamStats
from gateway.conference.registry import RoomRegistry
from gateway.conference.room import JoinRefused, Room, RoomClosed, RoomFull, RoomSpecLike

__all__ = [
    "JoinRefused",
    "Leg",
    "MediaStream",
    "Room",
    "RoomClosed",
    "RoomFull",
    "RoomRegistry",
    "RoomSpecLike",
    "StreamStats",
]
