"""H.261 RTP payload format (RFC 4587) with FFmpeg's h261 encoder and decoder, and tshark."""
from __future__ import annotations

import random

import av
import pytest

from gateway.media.payload.h261 import H261Depacketizer, H261Packetizer, _bits, is_intra, start_codes
from tests.rtp_dissect import dissect_rtp
from tests.video_helpers import encode_frames, quadrant_colours_right, quadrant_picture

W, H = 352, 288            # CIF


def encode(n: int, key_at: tuple[int, ...] = (), bit_rate: int = 384_000) -> list[tuple[int, bytes]]:
    return [(ts, data) for ts, data, _ in encode_frames("h261", W, H, n, quadrant_picture, options={}, key_at=key_at,
                                                        codec_time_base=True, bit_rate=bit_rate, gop=300)]


def rtp(frames, mtu=1200, seq=100):
    pk = H261Packetizer(mtu)
    out = []
    for ts, data in frames:
        for payload, marker in pk.packetize(data):
            assert len(payload) <= mtu
            out.append((seq & 0xFFFF, ts, marker, payload))
            seq += 1
    return out


def decode_all(packets, dp=None):
    dp = dp or H261Depacketizer()
    dec = av.CodecContext.create("h261", "r")
    pictures, frames = [], []
    for seq, ts, marker, payload in packets:
        for frame in dp.push(seq, ts, marker, payload):
            frames.append(frame)
            pictures += [p.to_ndarray(format="rgb24") for p in dec.decode(av.Packet(frame.data))]
    return dp, frames, pictures


def test_start_codes_are_found_at_bit_level_and_intra_pictures_known():
    frames = encode(6, key_at=(4,))
    bits = _bits(frames[0][1])
    codes = start_codes(bits)
    assert codes[0] == (0, 0) and [gn for _, gn in codes[1:]] == list(range(1, 13))   # CIF: 12 GOBs
    assert any(p % 8 for p, _ in codes[1:]), "FFmpeg's GOB start codes are not byte aligned"
    assert [is_intra(_bits(d)) for _, d in frames] == [True, False, False, False, True, False]


@pytest.mark.parametrize("mtu", [1200, 300])
def test_h261_packets_rejoin_bit_exactly_and_decode_to_the_right_colours(mtu):
    frames = encode(8, bit_rate=1_000_000)
    packets = rtp(frames, mtu)
    if mtu == 300:
        assert len(packets) > len(frames) + 3                   # the intra picture's GOBs cut, on bit boundaries
        assert any(p[0] >> 5 for _, _, _, p in packets)         # some packet starts inside a byte (SBIT)
    first = packets[0][3]
    assert first[0] >> 5 == 0 and first[1] & 0xF0 == 0          # SBIT 0, GOBN 0: begins at the picture start
    assert first[0] & 0x01                                      # V: motion vectors may be used
    dp, got, pictures = decode_all(packets)
    assert [f.data[:len(d)] for f, (_, d) in zip(got, frames)] == [d for _, d in frames]   # the same bits
    assert len(pictures) == len(frames) and dp.stats.dropped == 0
    for p in pictures:
        quadrant_colours_right(p, tol=30)


def test_a_lost_packet_drops_the_frame_and_waits_for_an_intra_picture():
    frames = encode(10, key_at=(6,))
    packets = rtp(frames, 400)
    lost_in = 2                                               # lose one packet of frame 2
    lost = next(i for i, (_, ts, _, _) in enumerate(packets) if ts == frames[lost_in][0])
    rng = random.Random(3)
    kept = packets[:lost] + packets[lost + 1:]
    # a little reordering too: within 3 packets
    for i in range(0, len(kept) - 3, 5):
        j = i + rng.randrange(3)
        kept[i], kept[j] = kept[j], kept[i]
    dp, got, pictures = decode_all(kept)
    times = [f.timestamp for f in got]
    assert frames[lost_in][0] not in times                    # never handed to the decoder
    assert frames[lost_in + 1][0] not in times               # P pictures after it: their reference is gone
    assert frames[6][0] in times and got[times.index(frames[6][0])].keyframe
    for p in pictures:
        quadrant_colours_right(p, tol=30)


def test_tshark_reads_our_h261_rtp_without_malformed_packets():
    packets = rtp(encode(5), 300)
    rows = dissect_rtp(packets, 31, None, ["h261.sbit", "h261.ebit", "h261.gobn"])
    assert len(rows) == len(packets)
    sbits = [int(r[0]) for r in rows]
    ebits = [int(r[1]) for r in rows]
    # a packet that ends inside a byte is followed by one that starts there
    for e, s in zip(ebits, sbits[1:]):
        assert (e + s) % 8 == 0
