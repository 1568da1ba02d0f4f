"""A WebRTC participant (an aiortc client, as a browser would be) in a room with an RTP participant
and an H.263 site, through gateway.webrtc.peer — and the aiortc internals it relies on
(gateway.webrtc.hooks), each checked against the pinned version."""
from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace

import aiortc
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import RtpMedia, StreamPlan
from gateway.media.codecs import MediaFormat
from gateway.webrtc import hooks, peer as peer_module
from gateway.webrtc.offer import prepare_offer
from gateway.webrtc.peer import PacketTrack, WebRtcPeer
from interop_tests.peers.baresip_video import cell_colour
from interop_tests.peers.rtp_participant import RtpParticipant, band_level_db, spectrum_peak
from interop_tests.peers.video_peer import VideoPeer, solid, video_format
from interop_tests.peers.webrtc_client import WebRtcClient
from tests.conftest import LOOP, run_for

CAT = default_catalogue()
PCMU = MediaFormat(CAT.get("PCMU"), 0, ptime_ms=20)
RED, BLUE = (220, 30, 30), (30, 40, 220)


class Room:
    """An RTP site (PCMU, 700 Hz; H.263, red) in a cp-2x2 room, and a WebRTC client (440 Hz, blue)."""

    def __init__(self) -> None:
        hooks.set_host_addresses(["127.0.0.1"])
        base = random.randrange(10000, 32000, 2)
        self.plane = media_plane((base, base + 199), grace_period=0.2, start_clock=True)
        self.spec = SimpleNamespace(id="webrtc-room", name="W", max_participants=None, layout="cp-2x2",
                                    max_resolution=None, pin=None)
        fmt = video_format("H263")
        self.site = VideoPeer(self.plane.ports, fmt, solid(RED))
        self.voice = RtpParticipant("PCMU", 0, seed=3)
        vp = LOOP.run_until_complete(self.voice.start())
        self.media = RtpMedia(self.plane.ports, bind="127.0.0.1", display_name="site", protocol="test")
        a, v = self.media.open("audio"), self.media.open("video")
        self.media.apply("video", StreamPlan("video", fmt, fmt, remote=("127.0.0.1", self.site.session.local_port),
                                             feedback=frozenset({"nack pli"})))
        self.media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=("127.0.0.1", vp)))
        self.voice.set_remote("127.0.0.1", a.local_port)
        self.voice.play_tone(700)
        self.voice.start_sending()
        self.site.start(v.local_port)
        self.plane.registry.join(self.spec, self.media.leg)
        self.client = WebRtcClient(tone=440, colour=BLUE)
        self.peer = WebRtcPeer(CAT, display_name="Xã A", remote="127.0.0.1")
        self.events: list[tuple[str, dict]] = []

        async def connect() -> str:
            offer = await self.client.offer()
            answer = await self.peer.answer(prepare_offer(offer))
            for ev in ("keyframe_request", "bitrate_limit"):
                self.peer.leg.on(ev, lambda _ev=ev, **kw: self.events.append((_ev, kw)))
            self.plane.registry.join(self.spec, self.peer.leg)
            await self.client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await self.client.wait_connected()
            return answer

        self.answer = LOOP.run_until_complete(asyncio.wait_for(connect(), 15))

    @property
    def room(self):
        return self.plane.registry.get("webrtc-room")

    @property
    def sink(self):
        return self.peer.leg.video.sink

    def close(self) -> None:
        LOOP.run_until_complete(self.client.close())
        LOOP.run_until_complete(self.peer.close())
        self.media.leg.hangup("over")
        LOOP.run_until_complete(self.site.stop())
        self.voice.stop_sending()
        self.voice.close()
        self.plane.stop()
        run_for(0.1)


@pytest.fixture(scope="module")
def room():
    r = Room()
    run_for(3.0)
    yield r
    r.close()


def test_the_webrtc_participant_hears_and_sees_the_room_and_is_heard_and_seen(room):
    c = room.client
    freq, level = spectrum_peak(c.heard(1.0), 16000)
    assert abs(freq - 700) < 15 and level > -30, f"the WebRTC client hears {freq:.0f} Hz at {level:.1f} dB"
    assert band_level_db(c.heard(1.0), 16000, 440) < -40, "the WebRTC client hears itself"
    freq, level = spectrum_peak(room.voice.heard(1.0), 8000)
    assert abs(freq - 440) < 15 and level > -30, f"the RTP site hears {freq:.0f} Hz at {level:.1f} dB"
    cells = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5)]
    seen = sorted(tuple(int(x) for x in cell_colour(c.received.picture, cell).round(-1)) for cell in cells)
    assert any(np.abs(cell_colour(c.received.picture, cell) - RED).max() < 45 for cell in cells), seen
    assert any(np.abs(cell_colour(c.received.picture, cell) - BLUE).max() < 45 for cell in cells), seen
    assert any(np.abs(room.site.cell_colour(cell) - np.array(BLUE)).max() < 45 for cell in cells), \
        "the H.263 site does not see the WebRTC participant's blue"
    me = next(p for p in room.room.roster() if p["protocol"] == "webrtc")
    assert me["name"] == "Xã A" and me["audio"] == "opus" and me["video"] == "VP8", me
    assert me["video_media"]["in"]["frames_decoded"] > 10 and me["video_media"]["out"]["packetization"] == -1
    assert me["quality"]["rx"]["packets"] > 100 and me["quality"]["rx"]["loss_pct"] == 0.0


def test_nothing_is_encoded_per_browser_and_aiortc_decodes_nothing(room):
    """The browser leg takes whole frames from an encoder group (aiortc only packetizes) and its
    received packets go to the room's pipeline (aiortc's decoder thread gets nothing)."""
    t = next(t for t in room.peer.pc.getTransceivers() if t.kind == "video")
    assert isinstance(t.receiver._RTCRtpReceiver__jitter_buffer, hooks._Tap)
    assert t.receiver._RTCRtpReceiver__jitter_buffer.packets > 20
    assert t.receiver._RTCRtpReceiver__decoder_queue.qsize() == 0
    enc = t.sender._RTCRtpSender__encoder          # made lazily; its codec context only on aiortc's encode path
    assert enc is None or getattr(enc, "codec", None) is None, "aiortc encoded for the browser leg"
    assert room.sink.group is not None and room.sink in room.sink.group.members
    track = room.peer.sessions["video"].track
    assert track.pushed > 20 and track.fast is not None and track.fast.sent >= track.pushed
    # what aiortc's RTCP sender reports count is what the fast path sent
    assert t.sender._RTCRtpSender__packet_count == track.fast.sent


def test_a_pli_from_the_browser_brings_a_keyframe_at_once(room):
    c = room.client
    before_sent, before_frames = room.sink.keyframes_sent, c.received.frames
    run_for(1.0)       # the keyframe gate lets one IDR through per 500 ms
    vt = next(t for t in c.pc.getTransceivers() if t.kind == "video")
    ssrc = room.peer.pc.getTransceivers()[1].sender._ssrc
    LOOP.run_until_complete(vt.receiver._send_rtcp_pli(ssrc))
    deadline = time.monotonic() + 1.0
    while room.sink.keyframes_sent == before_sent and time.monotonic() < deadline:
        run_for(0.02)
    assert room.sink.keyframes_sent > before_sent, "no keyframe after the browser's PLI"
    assert ("keyframe_request", {"stream": "video"}) in room.events
    run_for(0.4)
    assert c.received.frames > before_frames + 5, "the client stopped decoding"


def test_remb_from_the_browser_moves_its_tier_and_back(room, monkeypatch):
    monkeypatch.setattr(peer_module, "REMB_HOLD", 0.0)
    vt = next(t for t in room.client.pc.getTransceivers() if t.kind == "video")
    ssrc = next(t for t in room.peer.pc.getTransceivers() if t.kind == "video").sender._ssrc
    vt.receiver._RTCRtpReceiver__remote_bitrate_estimator = None    # the test client's own estimates: off

    def remb(bps: int) -> None:
        pkt = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1234, media_ssrc=0, fci=pack_remb_fci(bps, [ssrc]))
        LOOP.run_until_complete(vt.receiver._send_rtcp(pkt))
        run_for(0.2)

    remb(3_000_000)
    top = room.sink.tier_kbps
    remb(300_000)
    assert room.sink.tier_kbps == 256 and room.sink.group.settings.width <= 640, room.sink.stats()
    remb(3_000_000)
    assert room.sink.tier_kbps == top == room.sink.ceiling_kbps


def test_the_browsers_receiver_reports_fill_the_remote_figures(room):
    run_for(1.5)
    st = room.peer.leg.audio.stats
    assert st.remote_fraction_lost is not None and st.remote_jitter_ms is not None, st
    assert st.rtt_ms is not None and 0 <= st.rtt_ms < 100, st


def test_only_the_configured_host_addresses_are_offered(room):
    cands = [l for l in room.answer.splitlines() if l.startswith("a=candidate:")]
    assert cands and all(l.split()[4] == "127.0.0.1" for l in cands), cands


def test_the_hooks_refuse_an_aiortc_they_were_not_written_for(monkeypatch):
    hooks.check_versions()
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(hooks.HookError, match="1.16.0"):
        hooks.check_versions()
    with pytest.raises(hooks.HookError):
        hooks.tap_receiver(SimpleNamespace(), lambda p: None)


def test_the_pinned_version_is_the_one_setup_cfg_installs():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    assert f"aiortc=={hooks.AIORTC_VERSION}" in text and f"aioice=={hooks.AIOICE_VERSION}" in text


def test_a_packet_track_waits_for_its_sender_then_for_a_keyframe_and_again_after_a_lost_frame():
    import av

    class Sender:            # stands in for hooks.FastSender: running once aiortc starts the sender
        running = False
        ok = True
        sent: list = []

        def push(self, packet):
            if self.ok:
                self.sent.append(bytes(packet))
            return self.ok

    asks = []
    s = Sender()
    t = PacketTrack("video", on_start=lambda: asks.append("start"))
    t.fast = s
    t.push(av.Packet(b"k"), keyframe=True)
    assert s.sent == [] and asks == [], "sent before aiortc started the sender"
    s.running = True
    t.push(av.Packet(b"p"), keyframe=False)
    assert s.sent == [] and asks == ["start"], "a delta frame before any keyframe was sent"
    t.push(av.Packet(b"k"), keyframe=True)
    t.push(av.Packet(b"p"), keyframe=False)
    assert s.sent == [b"k", b"p"]
    s.ok = False                             # e.g. no ICE pair for a moment
    t.push(av.Packet(b"p"), keyframe=False)
    s.ok = True
    t.push(av.Packet(b"p"), keyframe=False)
    assert s.sent == [b"k", b"p"] and t.waiting_keyframe, "a delta frame after a lost one was sent"
    t.push(av.Packet(b"k"), keyframe=True)
    assert s.sent[-1] == b"k" and not t.waiting_keyframe
    t.stop()
