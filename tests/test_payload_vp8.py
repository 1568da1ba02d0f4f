"""VP8 RTP payload format (RFC 7741) with libvpx and FFmpeg's decoder, and tshark's dissector."""
from __future__ import annotations

import random

import av
import pytest

from gateway.media.payload.vp8 import VP8Depacketizer, VP8Packetizer, parse_descriptor
from tests.rtp_dissect import dissect_rtp
from tests.video_helpers import encode_frames
from tests.test_payload_h264 import H, W, assert_right_colours, pattern


def encode(n: int, key_at: tuple[int, ...] = ()) -> list[tuple[int, bytes]]:
    opts = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "g": "300"}
    return [(ts, data) for ts, data, _ in encode_frames("libvpx", W, H, n, pattern, options=opts, key_at=key_at,
                                                        bit_rate=800_000)]


def rtp(frames, mtu=1200):
    pk = VP8Packetizer(mtu)
    out, seq = [], 65533
    for ts, data in frames:
        for payload, marker in pk.packetize(data):
            assert len(payload) <= mtu
            out.append((seq & 0xFFFF, ts, marker, payload))
            seq += 1
    return out


def test_vp8_frames_arrive_whole_and_decode_to_the_right_colours():
    frames = encode(8)
    packets = rtp(frames, mtu=400)
    assert len(packets) > len(frames)                      # frames are split at the MTU
    assert parse_descriptor(packets[0][3])[1:3] == (True, 0)
    rnd = random.Random(5)
    for i in range(0, len(packets) - 3, 4):
        if rnd.random() < 0.5:
            packets[i], packets[i + 1] = packets[i + 1], packets[i]
    dp = VP8Depacketizer()
    dec = av.CodecContext.create("vp8", "r")
    pictures = []
    for seq, ts, marker, payload in packets:
        for f in dp.push(seq, ts, marker, payload):
            pictures += dec.decode(av.Packet(f.data))
    assert len(pictures) == 8 and dp.stats.dropped == 0
    for p in pictures:
        assert_right_colours(p.to_ndarray(format="rgb24"))


def test_a_lost_packet_waits_for_the_next_keyframe():
    frames = encode(10, key_at=(6,))
    packets = rtp(frames, mtu=400)
    lost = next(i for i, p in enumerate(packets) if p[1] == frames[3][0])
    del packets[lost]
    dp = VP8Depacketizer()
    shown = [f.timestamp for s, ts, m, p in packets for f in dp.push(s, ts, m, p)]
    assert shown == [ts for ts, _ in frames[:3]] + [ts for ts, _ in frames[6:]]
    assert not dp.keyframe_needed and dp.stats.keyframes == 2


def test_truncated_descriptors_are_refused():
    for bad in (b"", b"\x90", b"\x90\x80", b"\x90\x80\x80", b"\x90\x80\x80\x01"):
        with pytest.raises(ValueError):
            parse_descriptor(bad)
    dp = VP8Depacketizer()
    for seq in range(200):
        dp.push(seq, seq, True, bytes([0x90, 0x80]))
    assert dp.stats.malformed == 200 and dp.stats.frames == 0


def test_tshark_dissects_our_vp8_rtp_cleanly():
    rows = dissect_rtp(rtp(encode(4), mtu=500), 97, "vp8",
                       ["vp8.pld.pictureid", "vp8.pld.s", "vp8.keyframe.width", "vp8.keyframe.height"])
    starts = [r for r in rows if r[1] in ("1", "True")]
    assert [int(r[0], 0) for r in starts] == [0, 1, 2, 3]          # PictureID counts frames, S=1 once each
    assert (starts[0][2], starts[0][3]) == (str(W), str(H))        # the keyframe's size, as tshark reads it


def test_a_frame_that_never_ends_is_not_held_without_bound():
    from gateway.media.payload.frames import MAX_PACKETS_PER_FRAME

    dp = VP8Depacketizer()
    for seq in range(0, 3 * MAX_PACKETS_PER_FRAME, 2):          # one timestamp, gaps, never a marker
        dp.push(seq & 0xFFFF, 1234, False, bytes([0x90, 0x80, 0x80, 0x00, 0x00]))
    assert sum(len(p) for p in dp._frames.values()) <= MAX_PACKETS_PER_FRAME
    assert dp.stats.dropped >= 1 and dp.keyframe_needed
