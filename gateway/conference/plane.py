"""The media plane's wiring, in one place for the gateway and the test harnesses.

:func:`media_plane` makes the port allocator, the process's one
:class:`~gateway.media.clock.MediaClock` (its late hook first reads the RTP
packets that queued while the loop was busy, so a late tick finds them) and the
:class:`~gateway.conference.RoomRegistry` whose rooms tick on it; and the video clock (30 ticks
a second) the rooms' video runs on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.conference.registry import RoomRegistry
from gateway.media.clock import MediaClock
from gateway.media.ports import PortAllocator
from gateway.media.rtp import read_pending


@dataclass
class MediaPlane:
    ports: PortAllocator
    clock: MediaClock
    registry: RoomRegistry
    video_clock: MediaClock

    def start(self) -> None:
        self.clock.start()
        self.video_clock.start()

    def stop(self) -> None:
        self.clock.stop()
        self.video_clock.stop()


def media_plane(rtp_ports: tuple[int, int], *, grace_period: float = 60.0, reactor: Any = None,
                start_clock: bool = False) -> MediaPlane:
    """Ports ``rtp_ports`` (lo, hi), the media clock and the room registry, wired together."""
    ports = PortAllocator(*rtp_ports)
    clock = MediaClock()
    clock.add_late_hook(read_pending)  # a late tick first reads what queued up
    kw = {"reactor": reactor} if reactor is not None else {}
    # video: 30 frames a second; a frame the loop was too busy for is skipped, never caught up
    video_clock = MediaClock(1 / 30, max_catchup=0, **kw)
    registry = RoomRegistry(clock, grace_period=grace_period, video_clock=video_clock, **kw)
    plane = MediaPlane(ports, clock, registry, video_clock)
    if start_clock:
        plane.start()
    return plane
