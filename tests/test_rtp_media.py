"""The Leg as typed media streams, on real RTP sessions (loopback): RtpMedia makes the Leg from
negotiated MediaFormats, keyframe requests go each way by the route the far end supports, a codec
change swaps the audio in place, and hanging up gives every port back."""
from __future__ import annotations

import socket

import pytest

from gateway.catalogue import default_catalogue
from gateway.conference import Leg, MediaStream
from gateway.conference.rtp_media import RtpMedia, StreamPlan
from gateway.media.codecs import MediaFormat
from gateway.media.codecs import h264
from gateway.media.ports import PortAllocator
from gateway.media.rtp import open_rtp_session
from tests.conftest import run_for, wait
from tests.test_rtp import _free_base

CAT = default_catalogue()
LOOP = "127.0.0.1"
PCMU = MediaFormat(CAT.get("PCMU"), 0, ptime_ms=20)
PCMA = MediaFormat(CAT.get("PCMA"), 8, ptime_ms=20)
H264 = MediaFormat(CAT.get("H264"), 96, h264.from_fmtp(CAT.get("H264"), {"packetization-mode": "1"}))


@pytest.fixture
def alloc():
    base = _free_base()
    return PortAllocator(base, base + 15)


def test_a_stream_is_typed_and_keyframe_requests_are_split_by_direction():
    leg = Leg()
    asked: list[int] = []
    video = leg.add_stream(MediaStream("video", "video", H264, H264, keyframe_requester=lambda: asked.append(1)))
    heard: list[str] = []
    leg.on("keyframe_request", lambda stream: heard.append(stream))
    assert leg.request_keyframe("video") and asked == [1] and heard == []   # conference → far end: no event
    leg.emit("keyframe_request", stream="video")                           # far end → conference
    assert heard == ["video"] and asked == [1]
    assert (video.stats.keyframes_requested, video.stats.keyframes_asked) == (1, 1)
    assert not leg.request_keyframe("audio")
    with pytest.raises(ValueError, match="audio format"):
        MediaStream("video", "video", PCMU, PCMU)
    with pytest.raises(ValueError, match="kind"):
        MediaStream("x", "text")


def test_rtp_media_builds_the_leg_and_routes_keyframes_and_swaps_codecs(alloc):
    far_audio = open_rtp_session(alloc, LOOP)
    far_video = open_rtp_session(alloc, LOOP, clock_rate=90000, timeout=0)
    media = RtpMedia(alloc, bind=LOOP, display_name="Xã Lũng Cú", protocol="sip")
    fallback: list[str] = []
    replaced: list[str] = []
    media.keyframe_fallback = fallback.append
    media.on_replaced = lambda leg, sid: replaced.append(sid)
    try:
        a, v = media.open("audio"), media.open("video")
        far_audio.set_remote(LOOP, a.local_port)
        far_video.set_remote(LOOP, v.local_port)
        # video negotiated first: no Leg until audio is known both ways
        media.apply("video", StreamPlan("video", H264, H264, remote=(LOOP, far_video.local_port),
                                        feedback=frozenset({"nack pli"})))
        assert media.leg is None
        media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=(LOOP, far_audio.local_port), dtmf_rx_pt=101))
        leg = media.leg
        assert leg is not None and leg.display_name == "Xã Lũng Cú"
        assert set(leg.streams) == {"audio", "video"} and leg.audio.tx is PCMU and leg.video.rx is H264
        asks: list[str] = []
        leg.on("keyframe_request", lambda stream: asks.append(stream))
        # the far end sends video and asks us for a keyframe by RTCP PLI
        fb: list[str] = []
        far_video.on_rtcp_feedback = lambda kind, detail: fb.append(kind)
        far_video.send(b"\x65" * 20, pt=96, timestamp_step=3000)
        v.send(b"\x65" * 20, pt=96, timestamp_step=3000)
        run_for(0.1)
        far_video.send_pli()
        run_for(0.1)
        assert asks == ["video"] and media.video_packets == 1
        # we ask the far end: PLI, because it negotiated "nack pli"
        assert leg.request_keyframe("video")
        run_for(0.1)
        assert fb == ["pli"] and fallback == []
        # without RTCP feedback the adapter's way is used (H.245 / SIP INFO)
        media.apply("video", StreamPlan("video", H264, H264, remote=(LOOP, far_video.local_port)))
        assert leg.request_keyframe("video") and fallback == ["video"]
        assert leg.video.stats.keyframes_requested == 2 and leg.video.stats.packets_received == 1
        # a codec change (re-INVITE to PCMA) swaps the audio source/sink in place
        first = leg.audio.source
        media.apply("audio", StreamPlan("audio", PCMA, PCMA, remote=(LOOP, far_audio.local_port)))
        assert replaced == ["audio"] and leg.audio.source is not first and leg.audio.tx is PCMA
        # the same plan again changes nothing
        media.apply("audio", StreamPlan("audio", PCMA, PCMA, remote=(LOOP, far_audio.local_port)))
        assert replaced == ["audio"]
        in_use = alloc.in_use
        leg.hangup("test over")
        run_for(0.1)
        assert media.closed and alloc.in_use == in_use - 2
    finally:
        media.close()
        wait(far_audio.close())
        wait(far_video.close())
    run_for(0.05)
    assert alloc.in_use == 0


def test_audio_timeout_hangs_the_leg_up(alloc):
    media = RtpMedia(alloc, bind=LOOP, rtp_timeout=0.3)
    s = media.open("audio")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((LOOP, 0))
    try:
        media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=sink.getsockname()))
        reasons: list[str] = []
        media.leg.on("hangup", lambda reason: reasons.append(reason))
        s.send(b"\xff" * 160, pt=0, timestamp_step=160)
        run_for(1.0)
        assert reasons and reasons[0].startswith("no media received")
        assert media.closed
    finally:
        sink.close()
        media.close()
