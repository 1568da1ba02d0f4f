"""A room as its participants see it: real RTP on loopback, real codecs (PyAV), the media plane as
the gateway wires it (RtpMedia → Leg → Room → VideoMixer → encoder groups → RtpSession).

Each participant sends a picture of its own colour and decodes what the room sends back; the
tests look at the colours in the cells of that picture."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import RtpMedia, StreamPlan
from gateway.media.codecs import MediaFormat
from gateway.media.layout import LAYOUTS
from gateway.media.rtp import open_rtp_session
from tests.conftest import run_for, wait
from tests.video_peer import LOOP, VideoPeer, solid, video_format

CAT = default_catalogue()
PCMU = MediaFormat(CAT.get("PCMU"), 0, ptime_ms=20)
RED, GREEN, BLUE, YELLOW, MAGENTA = (220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (210, 40, 210)
BLACK = (16, 16, 16)


class Harness:
    def __init__(self, layout: str = "cp-2x2"):
        base = random.randrange(10000, 32000, 2)
        self.plane = media_plane((base, base + 399), grace_period=0.2, start_clock=True)  # as the app wires it
        self.spec = SimpleNamespace(id="video-room", name="Video", max_participants=None, layout=layout,
                                    max_resolution=None, pin=None)
        self.peers: list[VideoPeer] = []
        self.audio = []
        self.media: list[RtpMedia] = []

    @property
    def room(self):
        return self.plane.registry.get("video-room")

    def join(self, fmt: MediaFormat, colour, name: str, *, feedback=frozenset({"nack pli"}), **kw) -> VideoPeer:
        ports = self.plane.ports
        peer = VideoPeer(ports, fmt, solid(colour) if colour else None, **kw)
        far_audio = open_rtp_session(ports, LOOP)
        media = RtpMedia(ports, bind=LOOP, display_name=name, protocol="test")
        a, v = media.open("audio"), media.open("video")
        media.apply("video", StreamPlan("video", fmt, fmt, remote=(LOOP, peer.session.local_port), feedback=feedback))
        media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=(LOOP, far_audio.local_port)))
        far_audio.set_remote(LOOP, a.local_port)
        peer.start(v.local_port)
        self.plane.registry.join(self.spec, media.leg)
        self.peers.append(peer)
        self.audio.append(far_audio)
        self.media.append(media)
        return peer

    def close(self):
        for m in self.media:
            if m.leg is not None:
                m.leg.hangup("test over")
        for p in self.peers:
            wait(p.stop())
        for s in self.audio:
            wait(s.close())
        self.plane.stop()
        run_for(0.05)


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(layout: str = "cp-2x2") -> Harness:
        h = Harness(layout)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def assert_colour(peer: VideoPeer, cell, want, what: str, tol: float = 45) -> None:
    got = peer.cell_colour(cell)
    assert np.abs(got - np.array(want)).max() < tol, f"{what}: mean colour {got.round()} expected {want}"


def test_every_codec_sees_every_other_in_its_tile(harness):
    """Five participants, five codecs and packetizations, in cp-3x3: each decodes the room's picture
    and finds everyone's colour in their cell (join order: nobody has spoken) and black elsewhere."""
    h = harness("cp-3x3")
    joined = [
        (video_format("H264", mode=1), RED, "H.264 mode 1"),
        (video_format("H264", mode=0), GREEN, "H.264 mode 0"),
        (video_format("VP8"), BLUE, "VP8"),
        (video_format("H263"), YELLOW, "H.263 RFC 2190"),
        (video_format("H263-1998"), MAGENTA, "H.263+ RFC 4629"),
    ]
    peers = [h.join(fmt, colour, name) for fmt, colour, name in joined]
    run_for(4.0)
    cells = LAYOUTS["cp-3x3"]
    for peer, (_, _, name) in zip(peers, joined):
        assert peer.decoded > 10, f"{name} decoded {peer.decoded} frames of the room's picture"
        for i, (_, colour, who) in enumerate(joined):
            assert_colour(peer, cells[i], colour, f"{name} looking at {who}'s cell {i}")
        for i in range(len(joined), 9):
            assert_colour(peer, cells[i], BLACK, f"{name} looking at empty cell {i}", tol=20)
    info = h.room.video.info()
    # one group per codec / packetization-independent settings: H.264 mode 0 and 1 share one encoder
    codecs = sorted(g["name"].split()[0] for g in info["groups"])
    assert codecs == ["H263", "H263-1998", "H264", "VP8"], info["groups"]
    assert info["late_ticks"] < info["ticks"] * 0.2, info
