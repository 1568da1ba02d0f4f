"""Video with baresip, an independent SIP peer: what it sends appears in the room's picture, and
what it receives (read from a loopback capture by tshark's RTP dissector, depacketized and decoded)
shows everyone in the right tile.

baresip sends a Motion-JPEG clip of one colour (its avformat source); the room is ``cp-2x2``,
filled in join order while nobody speaks."""
from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np

from gateway.catalogue import default_catalogue
from gateway.media.codecs import MediaFormat, h263, h264
from gateway.media.layout import LAYOUTS
from interop_tests.peers.baresip_video import cell_colour, clip, last_picture, received_rtp, silence
from interop_tests.peers.capture import LoopbackCapture

CAT = default_catalogue()
RED, BLUE = (220, 30, 30), (30, 40, 220)


def test_baresip_h264_mode0_and_h263_see_each_other_in_cp_2x2(cau, baresip_factory, tmp_path):
    red = clip(tmp_path / "red.avi", RED)
    blue = clip(tmp_path / "blue.avi", BLUE)
    quiet = ("aufile", str(silence(tmp_path / "quiet.wav")))    # nobody speaks: cells in join order
    a = baresip_factory("h264", audio_codecs=("PCMU/8000/1",), video_codecs=("H264",), audio_source=quiet,
                        video_source=("avformat", str(red)))
    b = baresip_factory("h263", audio_codecs=("PCMU/8000/1",), video_codecs=("H263",), audio_source=quiet,
                        video_source=("avformat", str(blue)))
    pcap = tmp_path / "video.pcapng"
    bpf = f"udp portrange {a.rtp_lo}-{a.rtp_hi} or udp portrange {b.rtp_lo}-{b.rtp_hi}"
    with LoopbackCapture(bpf, pcap):
        a.dial(cau.uri(cau.video_room))
        a.wait_established(timeout=15)
        time.sleep(1.0)                      # a joins first: the top-left cell
        b.dial(cau.uri(cau.video_room))
        b.wait_established(timeout=15)
        time.sleep(6.0)
        status = next(r for r in cau.status()["rooms"] if r["id"] == "video")
        full_room_until = time.time()          # before anyone leaves: the pictures to look at
        with urllib.request.urlopen(f"http://{cau.host}:{cau.http_port}/", timeout=5) as page:
            html = page.read().decode()
        a.hangup()
        b.hangup()
        a.wait_closed(timeout=10)
        b.wait_closed(timeout=10)
    assert "Set video encoder: H264 packetization-mode=0" in a.proc.output, a.proc.output[-2000:]
    # the status page's figures agree: both decoded, each in its codec's encoder group
    media = {p["name"]: p["video_media"] for p in status["roster"]}
    assert media["h264"]["in"]["frames_decoded"] > 20 and media["h263"]["in"]["frames_decoded"] > 20, media
    assert media["h264"]["out"]["group"].startswith("H264 1280x720"), media
    assert media["h263"]["out"]["group"].startswith("H263 352x288"), media
    # and the status page has a video row per participant: what we receive and send, the group
    assert "<h2>Video</h2>" in html and "group H264 1280x720" in html and "H264 mode 0" in html, html[-3000:]
    assert "H263 352x288" in html
    cells = LAYOUTS["cp-2x2"]
    for peer, name in ((a, "H264"), (b, "H263")):
        streams = received_rtp(pcap, peer.rtp_lo, peer.rtp_hi, before=full_room_until)
        video = {pt: p for pt, p in streams.items() if pt not in (0, 101, 13)}
        assert len(video) == 1, f"baresip {name} received RTP of payload types {sorted(streams)}"
        pt, packets = next(iter(video.items()))
        if name == "H264":
            fmt = MediaFormat(CAT.get("H264"), pt, h264.from_fmtp(CAT.get("H264"), {}))
            # mode 0: every packet a single NAL unit (types 1..23), no STAP-A / FU-A
            kinds = {p[3][0] & 0x1F for p in packets}
            assert kinds <= set(range(1, 24)), f"mode-0 receiver got NAL unit types {sorted(kinds)}"
        else:
            assert pt == 34, pt
            fmt = MediaFormat(CAT.get("H263"), 34, h263.from_fmtp(CAT.get("H263"), {}))
        picture, n = last_picture(fmt, packets)
        assert picture is not None and n > 20, f"baresip {name}: {n} pictures decoded from {len(packets)} packets"
        for i, want in ((0, RED), (1, BLUE)):
            got = cell_colour(picture, cells[i])
            assert np.abs(got - np.array(want)).max() < 50, \
                f"baresip {name} sees {got.round()} in cell {i}, expected {want} ({'H264 red' if i == 0 else 'H263 blue'})"
        for i in (2, 3):
            got = cell_colour(picture, cells[i])
            assert got.max() < 40, f"baresip {name} sees {got.round()} in empty cell {i}"


def test_a_reinvite_adds_video_and_another_takes_it_away(cau, sipp):
    """sipp calls with audio, re-INVITEs with H.264 video (answered with a video port), then with
    m=video 0 (answered m=video 0); the room's roster follows: the participant gains a video
    stream and loses it again."""
    seen: list[set[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for room in cau.status()["rooms"]:
                for p in room["roster"]:
                    if p["name"] == "sipp":
                        if not seen or seen[-1] != set(p["streams"]):
                            seen.append(set(p["streams"]))
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        r = sipp.uac(f"{cau.host}:{cau.sip_port}", "uac_reinvite_video", service=cau.video_room, call_ms=1500)
    finally:
        done.set()
        t.join(5)
    assert r.ok, r.explain()
    assert seen[:3] == [{"audio"}, {"audio", "video"}, {"audio"}], seen
