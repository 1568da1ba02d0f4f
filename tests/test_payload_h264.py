"""H.264 RTP payload format (RFC 6184) with a real encoder (libx264) and decoder (FFmpeg), and
tshark's dissector as the independent reader of what we put on the wire."""
from __future__ import annotations

import random

import av
import numpy as np
import pytest

from gateway.media.payload.h264 import (
    FU_A, NAL_IDR, NAL_PPS, NAL_SPS, STAP_A, H264Depacketizer, H264Packetizer, PacketTooLarge, nal_type,
    parse_sprop, split_annexb,
)
from tests.rtp_dissect import dissect_rtp
from tests.video_helpers import encode_frames

W, H = 640, 360
QUADRANTS = {(0, 0): (230, 40, 40), (0, 1): (40, 200, 40), (1, 0): (40, 40, 230), (1, 1): (230, 230, 40)}


def pattern(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for (r, c), rgb in QUADRANTS.items():
        img[r * H // 2:(r + 1) * H // 2, c * W // 2:(c + 1) * W // 2] = rgb
    x = (i * 24) % (W - 16)                     # a moving bar: every frame differs
    img[H // 2 - 8:H // 2 + 8, x:x + 16] = 255
    return img


def encode(n: int, slice_max: int | None = 1100, idr_at: tuple[int, ...] = ()) -> list[tuple[int, bytes]]:
    opts = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "keyint": "300",
            "bitrate": "800k"}
    if slice_max:
        opts["slice-max-size"] = str(slice_max)
    return [(ts, data) for ts, data, _ in encode_frames("libx264", W, H, n, pattern, options=opts, key_at=idr_at)]


def rtp(aus, mode: int, mtu: int = 1200) -> list[tuple[int, int, bool, bytes]]:
    pk = H264Packetizer(mode, mtu)
    out, seq = [], 65530                         # wraps 65535 → 0 on the way
    for ts, au in aus:
        for payload, marker in pk.packetize(au):
            assert len(payload) <= mtu
            out.append((seq & 0xFFFF, ts, marker, payload))
            seq += 1
    return out


def receive(packets) -> tuple[list[np.ndarray], H264Depacketizer]:
    dp = H264Depacketizer()
    dec = av.CodecContext.create("h264", "r")
    pictures = []
    for seq, ts, marker, payload in packets:
        for f in dp.push(seq, ts, marker, payload):
            pictures += [p.to_ndarray(format="rgb24") for p in dec.decode(av.Packet(f.data))]
    return pictures, dp


def assert_right_colours(img: np.ndarray) -> None:
    for (r, c), rgb in QUADRANTS.items():
        tile = img[r * H // 2 + 20:(r + 1) * H // 2 - 20, c * W // 2 + 20:(c + 1) * W // 2 - 20]
        tile = tile[np.abs(tile.astype(int) - 255).sum(axis=2) > 30]        # without the white bar
        assert np.abs(tile.mean(axis=0) - rgb).max() < 20, (r, c, tile.mean(axis=0), rgb)


@pytest.mark.parametrize("mode", [0, 1])
def test_one_sliced_bitstream_serves_mode_0_and_mode_1_receivers(mode):
    aus = encode(12)
    packets = rtp(aus, mode)
    types = {p[3][0] & 0x1F for p in packets}
    if mode == 0:
        assert types <= set(range(1, 24))                    # single NAL unit packets only (§6.2)
    else:
        assert STAP_A in types                                # SPS+PPS(+SEI) aggregated (§5.7.1)
    pictures, dp = receive(packets)
    assert len(pictures) == 12 and dp.stats.dropped == 0 and not dp.keyframe_needed
    for img in pictures:
        assert_right_colours(img)


def test_large_nal_units_are_fragmented_in_mode_1_and_refused_in_mode_0():
    aus = encode(3, slice_max=None)                           # the IDR is one NAL unit
    assert max(len(n) for _, au in aus for n in split_annexb(au)) > 500
    packets = rtp(aus, 1, mtu=500)
    fus = [p for p in packets if p[3][0] & 0x1F == FU_A]
    assert fus and fus[0][3][1] & 0x80 and any(p[3][1] & 0x40 for p in fus)   # start and end bits
    pictures, _ = receive(packets)
    assert len(pictures) == 3
    assert_right_colours(pictures[0])
    with pytest.raises(PacketTooLarge, match="packetization-mode 0"):
        rtp(aus, 0, mtu=500)


def test_a_lost_packet_drops_its_frame_asks_for_a_keyframe_and_recovers_at_the_next_idr():
    aus = encode(14, idr_at=(8,))
    packets = rtp(aus, 1)
    lost_ts = aus[4][0]
    victim = next(i for i, p in enumerate(packets) if p[1] == lost_ts)
    del packets[victim]
    dp = H264Depacketizer()
    dec = av.CodecContext.create("h264", "r")
    shown, wanted_before_idr = [], False
    idr_ts = aus[8][0]
    for seq, ts, marker, payload in packets:
        if ts == idr_ts:
            wanted_before_idr = wanted_before_idr or dp.keyframe_needed
        for f in dp.push(seq, ts, marker, payload):
            shown.append(ts)
            for p in dec.decode(av.Packet(f.data)):
                assert_right_colours(p.to_ndarray(format="rgb24"))     # never a half-built picture
    # the frames up to the loss are shown; from the loss until the IDR none (their reference is
    # gone) and a keyframe is wanted; from the IDR on, every frame is shown
    assert shown == [ts for ts, _ in aus[:4]] + [ts for ts, _ in aus[8:]]
    assert wanted_before_idr
    assert not dp.keyframe_needed and dp.stats.dropped >= 1


def test_reordered_packets_are_reassembled():
    aus = encode(8)
    packets = rtp(aus, 1, mtu=300)                            # many packets per frame
    rnd = random.Random(7)
    for i in range(0, len(packets) - 3, 3):                   # swap neighbours here and there
        if rnd.random() < 0.5:
            packets[i], packets[i + 2] = packets[i + 2], packets[i]
    pictures, dp = receive(packets)
    assert len(pictures) == 8 and dp.stats.dropped == 0


def test_hostile_payloads_are_counted_and_dropped_never_raised():
    rnd = random.Random(3)
    dp = H264Depacketizer()
    for seq in range(3000):
        payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        dp.push(seq, seq // 3, seq % 3 == 2, payload)
    assert dp.stats.frames == 0 or dp.stats.malformed > 0
    assert dp.stats.malformed + dp.stats.dropped > 500


def test_parameter_sets_from_sdp_go_before_every_idr():
    aus = encode(1)
    nals = split_annexb(aus[0][1])
    sps, pps = (next(n for n in nals if nal_type(n) == t) for t in (NAL_SPS, NAL_PPS))
    import base64
    sprop = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()},!!bad"
    assert parse_sprop(sprop) == [sps, pps]
    idr_only = b"".join(b"\x00\x00\x00\x01" + n for n in nals if nal_type(n) == NAL_IDR)
    pk = H264Packetizer(0, 1200, parameter_sets=parse_sprop(sprop))
    sent = [nal_type(p) for p, _ in pk.packetize(idr_only)]
    assert sent[:2] == [NAL_SPS, NAL_PPS] and NAL_IDR in sent
    # a receiver that never saw them in-band decodes with the SDP's
    dp = H264Depacketizer(parameter_sets=[sps, pps])
    idrs = [n for n in nals if nal_type(n) == NAL_IDR]
    frames = []
    for i, n in enumerate(idrs):
        frames += dp.push(i, 0, i == len(idrs) - 1, n)
    assert len(frames) == 1 and [nal_type(n) for n in split_annexb(frames[0].data)][:2] == [NAL_SPS, NAL_PPS]
    dec = av.CodecContext.create("h264", "r")
    assert len(dec.decode(av.Packet(frames[0].data))) == 1


@pytest.mark.parametrize("mode", [0, 1])
def test_tshark_dissects_our_h264_rtp_without_malformed_packets(mode):
    aus = encode(6, slice_max=1100 if mode == 0 else None)
    # Wireshark's H.264 dissector does not reassemble FU-A: it parses the first fragment of
    # x264's ~600-byte SEI (its settings text) as if it were whole and calls it malformed.
    # That one case is the dissector's; every other packet must dissect cleanly.
    rows = dissect_rtp(rtp(aus, mode, mtu=1200 if mode == 0 else 500), 96, "h264",   # mode 1: FU-A too
                       ["h264.nal_unit_hdr", "h264.nal_unit_type"], allow=lambda line: "FU-A Start:SEI" in line)
    types = {t for row in rows for col in row for t in col.split(",")}
    assert {"5", "7", "8"} <= types                            # the IDR, its SPS and PPS recognised
