"""A room as its participants see it: real RTP on loopback, real codecs (PyAV), the media plane as
the gateway wires it (RtpMedia → Leg → Room → VideoMixer → encoder groups → RtpSession).

Each participant sends a picture of its own colour and decodes what the room sends back; the
tests look at the colours in the cells of that picture."""
from __future__ import annotations

import random
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import RtpMedia, StreamPlan
from gateway.media.codecs import MediaFormat
from gateway.media.layout import LAYOUTS
from interop_tests.peers.rtp_participant import RtpParticipant
from tests.conftest import LOOP as LOOP_ASYNC
from tests.conftest import run_for, wait
from interop_tests.peers.video_peer import LOOP, VideoPeer, solid, video_format

CAT = default_catalogue()
PCMU = MediaFormat(CAT.get("PCMU"), 0, ptime_ms=20)
RED, GREEN, BLUE, YELLOW, MAGENTA = (220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (210, 40, 210)
CYAN = (30, 200, 210)
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

    def join(self, fmt: MediaFormat, colour, name: str, *, feedback=frozenset({"nack pli"}),
             fallback=None, mtu: int = 1200, **kw) -> VideoPeer:
        """A participant sending ``colour`` in ``fmt`` and PCMU audio (silence until ``talk``)."""
        ports = self.plane.ports
        peer = VideoPeer(ports, fmt, solid(colour) if colour else None, **kw)
        voice = RtpParticipant("PCMU", 0, seed=len(self.peers))
        voice_port = LOOP_ASYNC.run_until_complete(voice.start())
        media = RtpMedia(ports, bind=LOOP, display_name=name, protocol="test")
        media.keyframe_fallback = fallback
        media.video_mtu = mtu           # as the SIP UA and the H.323 service set it from the settings
        a, v = media.open("audio"), media.open("video")
        media.apply("video", StreamPlan("video", fmt, fmt, remote=(LOOP, peer.session.local_port), feedback=feedback))
        media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=(LOOP, voice_port)))
        voice.set_remote(LOOP, a.local_port)
        voice.start_sending()
        peer.start(v.local_port)
        self.plane.registry.join(self.spec, media.leg)
        peer.leg = media.leg
        peer.voice = voice
        self.peers.append(peer)
        self.audio.append(voice)
        self.media.append(media)
        return peer

    def close(self):
        for m in self.media:
            if m.leg is not None:
                m.leg.hangup("test over")
        for p in self.peers:
            wait(p.stop())
        for voice in self.audio:
            voice.stop_sending()
            voice.close()
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
    """Six participants, six codecs and packetizations, in cp-3x3: each decodes the room's picture
    and finds everyone's colour in their cell (join order: nobody has spoken) and black elsewhere."""
    h = harness("cp-3x3")
    joined = [
        (video_format("H264", mode=1), RED, "H.264 mode 1"),
        (video_format("H264", mode=0), GREEN, "H.264 mode 0"),
        (video_format("VP8"), BLUE, "VP8"),
        (video_format("H263"), YELLOW, "H.263 RFC 2190"),
        (video_format("H263-1998"), MAGENTA, "H.263+ RFC 4629"),
        (video_format("H261"), CYAN, "H.261 RFC 4587"),
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
    assert codecs == ["H261", "H263", "H263-1998", "H264", "VP8"], info["groups"]


def centre(peer: VideoPeer) -> np.ndarray:
    return peer.cell_colour((0.0, 0.0, 1.0, 1.0))


def test_voice_switching_follows_whoever_makes_the_tone(harness):
    """voice-switched: the speaker fills everyone's picture; the speaker sees the previous one."""
    h = harness("voice-switched")
    red = h.join(video_format("H264"), RED, "red")
    green = h.join(video_format("VP8"), GREEN, "green")
    blue = h.join(video_format("H263"), BLUE, "blue")
    green.voice.play_tone(440)
    run_for(2.5)
    assert h.room.mixer.dominant == green.leg.id
    for p in (red, blue):
        assert_colour(p, (0, 0, 1, 1), GREEN, f"{p.leg.display_name} while green speaks")
    green.voice.play_silence()
    blue.voice.play_tone(660)
    run_for(2.5)
    assert h.room.mixer.dominant == blue.leg.id
    for p in (red, green):
        assert_colour(p, (0, 0, 1, 1), BLUE, f"{p.leg.display_name} while blue speaks")
    # the speaker does not look at themself: blue sees who spoke before
    assert_colour(blue, (0, 0, 1, 1), GREEN, "blue (speaking) sees the previous speaker")
    groups = {g["name"] for g in h.room.video.info()["groups"]}
    assert any(name.endswith("(speaker)") for name in groups), groups


def test_the_layout_changes_while_the_room_runs(harness):
    h = harness("cp-2x2")
    red = h.join(video_format("H264"), RED, "red")
    h.join(video_format("H264"), GREEN, "green")
    run_for(2.0)
    assert_colour(red, LAYOUTS["cp-2x2"][1], GREEN, "cp-2x2 cell 1")
    keyframes = red.keyframes_received
    h.room.set_layout("cp-1+5")
    run_for(1.5)
    assert_colour(red, LAYOUTS["cp-1+5"][0], RED, "cp-1+5 large cell")
    assert_colour(red, LAYOUTS["cp-1+5"][1], GREEN, "cp-1+5 first small cell")
    assert_colour(red, LAYOUTS["cp-1+5"][3], BLACK, "cp-1+5 empty cell", tol=20)
    assert red.keyframes_received > keyframes, "a new layout starts with a keyframe"
    with pytest.raises(ValueError, match="cp-1\\+7"):
        h.room.set_layout("cp-4x4")


@pytest.mark.parametrize("form", ["pli", "fir", "sip-info", "h245"])
def test_a_keyframe_request_is_answered_within_a_frame_and_a_storm_is_coalesced(harness, form):
    """PLI and FIR come by RTCP; SIP INFO picture_fast_update and H.245 videoFastUpdatePicture reach
    the room the way their adapters deliver them (a keyframe_request event on the Leg)."""
    h = harness("cp-2x2")
    peer = h.join(video_format("H264"), RED, "asker", feedback=frozenset({"nack pli", "ccm fir"}))
    run_for(1.5)

    def ask():
        if form == "pli":
            peer.session.send_pli()
        elif form == "fir":
            peer.session.send_fir()
        else:
            peer.leg.emit("keyframe_request", stream="video")

    frames_before = len(peer.frames)
    asked_at = LOOP_ASYNC.time()
    ask()
    run_for(0.3)
    after = peer.frames[frames_before:]
    first_key = next((i for i, (_, key) in enumerate(after) if key), None)
    assert first_key is not None, f"no keyframe after a {form} request ({len(after)} frames)"
    assert first_key <= 1, f"the keyframe came {first_key + 1} frames after the {form} request"
    assert after[first_key][0] - asked_at < 0.1
    # a storm: 40 requests in 2 s give at most 2 keyframes a second
    keys_before = peer.keyframes_received
    run_for(0.6)
    for _ in range(40):
        ask()
        run_for(0.05)
    storm = peer.keyframes_received - keys_before
    assert 1 <= storm <= 5, f"{storm} keyframes for 40 {form} requests in 2 s"
    assert peer.leg.video.stats.keyframes_asked >= 41


def test_with_five_percent_loss_the_picture_recovers_and_never_freezes_a_second(harness):
    """5 % of the packets are lost on the way in and on the way out; the sender's picture changes
    every frame, so a frozen tile shows: it must change again within a second, all along. Lost
    packets are asked for again (NACK) both ways; what cannot be mended costs a keyframe."""
    h = harness("cp-2x2")
    rng = random.Random(7)

    def moving(i: int) -> np.ndarray:
        picture = np.empty((240, 320, 3), np.uint8)
        picture[:] = (40 + (i * 9) % 180, 60, 200 - (i * 9) % 180)
        return picture

    nack = frozenset({"nack", "nack pli"})       # both ends ask for lost packets again (RFC 4585)
    viewer = h.join(video_format("H264"), None, "viewer", feedback=nack)
    sender = h.join(video_format("H264"), RED, "sender", feedback=nack)
    sender.picture = moving
    sender.drop = lambda n: rng.random() < 0.05
    viewer.drop_in = lambda n: rng.random() < 0.05
    changes: list[float] = []
    last: list[np.ndarray] = []
    cell = LAYOUTS["cp-2x2"][1]

    def seen(at: float, picture: np.ndarray) -> None:
        colour = viewer.cell_colour(cell)
        if not last or np.abs(colour - last[0]).max() > 3:
            changes.append(at)
            last[:] = [colour]
    viewer.on_picture = seen
    run_for(1.5)
    changes.clear()
    start = LOOP_ASYNC.time()
    run_for(6.0)
    end = LOOP_ASYNC.time()
    marks = [start] + changes + [end]
    longest = max(b - a for a, b in zip(marks, marks[1:]))
    src = h.room.video.members[sender.leg.id].source
    assert src.session.stats.nacks_sent > 0, "the room did not ask the sender for the lost packets"
    assert h.media[0].sessions["video"].stats.retransmitted > 0, "the room did not resend the viewer's losses"
    assert longest < 1.0, f"the sender's tile froze for {longest:.2f} s ({len(changes)} changes in 6 s)"


def test_a_bitrate_limit_moves_a_receiver_to_a_lower_tier_and_back(harness):
    """REMB (RTCP, as browsers send it) and the adapters' limits (TMMBR, b=AS, H.245 flowControlCommand
    arrive as bitrate_limit events) move a receiver between the fixed tiers' encoder groups."""
    from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

    h = harness("cp-2x2")
    a = h.join(video_format("H264"), RED, "limited")
    b = h.join(video_format("H264"), GREEN, "unlimited")
    run_for(1.0)

    def group(peer) -> str:
        return h.room.video.member_stats(peer.leg.id)["out"]["group"]

    def remb(kbps: int) -> None:
        a.session._feedback(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=a.session.ssrc, media_ssrc=0,
                                           fci=pack_remb_fci(kbps * 1000, [a.session.remote_ssrc or 0])))

    assert group(a) == group(b) and group(a).endswith("2048k")
    keyframes = a.keyframes_received
    remb(400)
    run_for(1.0)
    assert group(a).endswith("256k") and group(b).endswith("2048k"), (group(a), group(b))
    assert a.keyframes_received > keyframes, "joining the lower tier's group starts with a keyframe"
    assert_colour(a, LAYOUTS["cp-2x2"][1], GREEN, "the picture goes on at the lower tier")
    a.leg.emit("bitrate_limit", stream="video", kbps=600)
    run_for(0.3)
    assert group(a).endswith("512k")
    # TMMBR (RFC 5104), as SIP room systems send it: 1.1 Mbit/s → the 1024 tier; answered by TMMBN
    notes: list[bytes] = []
    rtcp_in = a.session._rtcp_received
    a.session._rtcp_received = lambda data, addr, muxed: (notes.append(data), rtcp_in(data, addr, muxed))
    exp, mantissa = 4, 1_100_000 >> 4
    fci = struct.pack("!II", a.session.remote_ssrc or 0, (exp << 26) | (mantissa << 9) | 40)
    a.session._send_rtcp(struct.pack("!BBHII", 0x80 | 3, 205, 4, a.session.ssrc, 0) + fci)
    run_for(0.3)
    assert group(a).endswith("1024k"), group(a)
    assert any(d[1] == 205 and d[0] & 0x1F == 4 for d in notes), "no TMMBN came back"
    a.leg.emit("bitrate_limit", stream="video", kbps=None)       # lifted
    run_for(0.3)
    assert group(a) == group(b)
    assert len(h.room.video.groups) == 1


def test_an_audio_only_participant_gets_a_tile_with_their_name(harness):
    """A site that sends no video (a phone, a laptop without a camera) shows as its name on grey in
    its cell; those with video have their names along the bottom of theirs."""
    from gateway.media.labels import TILE_GREY, text_image

    h = harness("cp-2x2")
    viewer = h.join(video_format("H264"), RED, "Huyện Mường Tè")
    media = RtpMedia(h.plane.ports, bind=LOOP, display_name="Xã Pa Ủ", protocol="test")
    voice = RtpParticipant("PCMU", 0, seed=99)
    port = LOOP_ASYNC.run_until_complete(voice.start())
    a = media.open("audio")
    media.apply("audio", StreamPlan("audio", PCMU, PCMU, remote=(LOOP, port)))
    voice.set_remote(LOOP, a.local_port)
    voice.start_sending()
    h.audio.append(voice)
    h.media.append(media)
    h.plane.registry.join(h.spec, media.leg)
    run_for(2.0)
    pic = viewer.last
    ph, pw, _ = pic.shape
    x0, y0, cw, ch = (int(f * d) for f, d in zip(LAYOUTS["cp-2x2"][1], (pw, ph, pw, ph)))
    tile = pic[y0:y0 + ch, x0:x0 + cw].mean(axis=2)
    # the name tile is the name in its middle quarter (rendered as the test expects), grey around it
    band_h = ch // 4
    top = y0 + (ch - band_h) // 2
    expected = np.asarray(text_image("Xã Pa Ủ", cw, band_h, fill=235, background=TILE_GREY)) > 128
    got = pic[top:top + band_h, x0:x0 + cw].mean(axis=2) > 140
    overlap = (expected & got).sum() / max(1, expected.sum())
    assert overlap > 0.6, f"the audio-only tile does not show the name ({overlap:.0%} of its pixels)"
    assert abs(np.median(tile) - TILE_GREY) < 20, f"the tile is not the grey name tile ({np.median(tile)})"
    # the participant with video is labelled along the bottom of its cell
    x0, y0, cw, ch = (int(f * d) for f, d in zip(LAYOUTS["cp-2x2"][0], (pw, ph, pw, ph)))
    band = pic[y0 + ch - ch // 12:y0 + ch - 2, x0 + cw // 4:x0 + 3 * cw // 4].mean(axis=2)
    assert band.max() > 200 and band.min() < 80, "no name along the bottom of the video cell"


def test_the_dial_plan_turns_name_labels_off():
    from gateway.conference.room import Room
    from gateway.dialplan import parse_dialplan

    plan = parse_dialplan('version: 1\nrooms:\n  - id: a\n    numbers: ["1"]\n    layout: cp-2x2\n'
                          '    video: {labels: false}\n  - id: b\n    numbers: ["2"]\n')
    assert Room(plan.room("a")).video.labels is False and Room(plan.room("b")).video.labels is True
    with pytest.raises(Exception, match=r":5:\d+: labels of room 'a' must be true or false"):
        parse_dialplan('version: 1\nrooms:\n  - id: a\n    numbers: ["1"]\n    video: {labels: 7}\n')


def test_the_video_mtu_setting_reaches_the_packets(tmp_path, harness):
    """``video_mtu`` in the settings file: checked, and the packets we send stay within it."""
    from gateway.config import ConfigError, load_settings

    bad = tmp_path / "bad.yaml"
    bad.write_text("video_mtu: 9000\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:1:\d+: video_mtu must be 300 to 1452"):
        load_settings(bad)
    good = tmp_path / "good.yaml"
    good.write_text("video_mtu: 600\n")
    assert load_settings(good).video_mtu == 600
    h = harness("cp-2x2")
    sizes: list[int] = []
    peer = h.join(video_format("H264", mode=0), RED, "small MTU", mtu=600)
    inner = peer.session.on_packet
    peer.session.on_packet = lambda pt, seq, ts, m, payload, *rest: (sizes.append(len(payload)),
                                                                      inner(pt, seq, ts, m, payload, *rest))
    run_for(2.0)
    assert peer.decoded > 10 and sizes and max(sizes) <= 600, (peer.decoded, max(sizes, default=0))


def test_the_gaps_a_nack_asks_for():
    from gateway.media.video_stream import GapWatch

    g = GapWatch()
    assert g.missing(65534) == []                      # the first packet: nothing known before it
    assert g.missing(1) == [65535, 0]                  # across the wrap
    assert g.missing(0) == [] and g.missing(1) == []   # late or repeated: nothing more to ask
    assert g.missing(40) == []                         # more than 32 lost: a keyframe will do, not a NACK
    assert g.missing(42) == [41]
