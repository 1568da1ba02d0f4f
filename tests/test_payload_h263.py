"""H263-1998 RTP payload format (RFC 4629) with FFmpeg's h263p encoder and decoder, and tshark."""
from __future__ import annotations


import av
import numpy as np
import pytest

from gateway.media.payload.h263 import H263Depacketizer, H263Packetizer, is_intra, start_codes
from tests.rtp_dissect import dissect_rtp
from tests.video_helpers import QUADRANTS, encode_frames, quadrant_colours_right, quadrant_picture

W, H = 352, 288            # CIF, what a Polycom VSX sends


def encode(n: int, key_at: tuple[int, ...] = (), ps: int = 1000) -> list[tuple[int, bytes]]:
    return [(ts, data) for ts, data, _ in encode_frames("h263p", W, H, n, quadrant_picture, options={"ps": str(ps)},
                                                        key_at=key_at, codec_time_base=True, bit_rate=384_000,
                                                        gop=300)]


def rtp(frames, mtu=1200):
    pk = H263Packetizer(mtu)
    out, seq = [], 100
    for ts, data in frames:
        for payload, marker in pk.packetize(data):
            assert len(payload) <= mtu
            out.append((seq, ts, marker, payload))
            seq += 1
    return out


@pytest.mark.parametrize("mtu", [1200, 400])
def test_h263p_frames_are_split_at_gobs_and_decode_to_the_right_colours(mtu):
    frames = encode(8)
    assert is_intra(frames[0][1]) and not is_intra(frames[1][1])
    assert len(start_codes(frames[0][1])) > 1                       # the I picture has several GOBs
    packets = rtp(frames, mtu)
    assert packets[0][3][0] & 0x04                                  # P=1: starts at the picture start code
    dp = H263Depacketizer()
    dec = av.CodecContext.create("h263", "r")
    pictures = []
    for seq, ts, marker, payload in packets:
        for f in dp.push(seq, ts, marker, payload):
            assert f.data == dict(frames)[ts]                       # the bitstream comes back bit for bit
            pictures += dec.decode(av.Packet(f.data))
    assert len(pictures) == 8 and dp.stats.keyframes == 1
    for p in pictures:
        quadrant_colours_right(p.to_ndarray(format="rgb24"))


def test_a_lost_packet_waits_for_the_next_intra_picture():
    frames = encode(10, key_at=(6,))
    packets = rtp(frames, mtu=400)
    del packets[next(i for i, p in enumerate(packets) if p[1] == frames[2][0])]
    dp = H263Depacketizer()
    shown = [f.timestamp for s, ts, m, p in packets for f in dp.push(s, ts, m, p)]
    assert shown == [ts for ts, _ in frames[:2]] + [ts for ts, _ in frames[6:]]


def test_tshark_dissects_our_h263p_rtp_cleanly():
    rows = dissect_rtp(rtp(encode(3), mtu=600), 98, "h263p", ["h263p.p"])
    assert rows[0][0] in ("1", "True")                             # P=1 at the picture start


# --------------------------------------------------------------------------- RFC 2190 (H263, payload type 34)

def encode_h263(n: int, mtu: int, key_at: tuple[int, ...] = ()) -> list[tuple[int, bytes, list]]:
    """Baseline H.263 CIF as a Polycom VSX sends it; mb_info for the mode B splits."""
    from gateway.media.payload.h263 import parse_mb_info

    noise = np.random.default_rng(2).integers(0, 60, (H // 2, W // 2, 3), dtype=np.uint8)

    def picture(i: int) -> np.ndarray:
        img = quadrant_picture(i)
        img[:H // 2, :W // 2] = np.clip(img[:H // 2, :W // 2].astype(int) - 30 + noise, 0, 255)   # detail: big GOBs
        return img

    frames = encode_frames("h263", W, H, n, picture, options={"mb_info": str(mtu - 8)}, key_at=key_at,
                           codec_time_base=True, bit_rate=768_000, gop=300, side_data="h263_mb_info")
    return [(ts, data, parse_mb_info(info or b"")) for ts, data, info in frames]


def rfc2190(frames, mtu):
    from gateway.media.payload.h263 import RFC2190Packetizer

    pk = RFC2190Packetizer(mtu)
    out, seq = [], 7
    for ts, data, info in frames:
        for payload, marker in pk.packetize(data, info):
            assert len(payload) <= mtu
            out.append((seq, ts, marker, payload))
            seq += 1
    return out


@pytest.mark.parametrize("mtu", [1200, 500])
def test_rfc2190_mode_a_and_b_reassemble_bit_exact_and_decode(mtu):
    from gateway.media.payload.h263 import RFC2190Depacketizer

    frames = encode_h263(6, mtu)
    packets = rfc2190(frames, mtu)
    modes = {"B" if p[3][0] & 0x80 else "A" for p in packets}
    assert "A" in modes and (mtu > 1000 or "B" in modes)       # the CIF I-frame needs mid-GOB splits at 500
    dp = RFC2190Depacketizer()
    dec = av.CodecContext.create("h263", "r")
    by_ts = {ts: data for ts, data, _ in frames}
    pictures = []
    for seq, ts, marker, payload in packets:
        for f in dp.push(seq, ts, marker, payload):
            assert f.data == by_ts[ts]                           # SBIT/EBIT joins give the bits back exactly
            pictures += dec.decode(av.Packet(f.data))
    assert len(pictures) == 6 and dp.stats.keyframes == 1
    for p in pictures:
        img = p.to_ndarray(format="rgb24")
        for (r, c), rgb in QUADRANTS.items():
            if (r, c) == (0, 0):
                continue                                          # the noisy quadrant
            tile = img[r * H // 2 + 16:(r + 1) * H // 2 - 16, c * W // 2 + 16:(c + 1) * W // 2 - 16]
            tile = tile[np.abs(tile.astype(int) - 255).sum(axis=2) > 30]
            assert np.abs(tile.mean(axis=0) - rgb).max() < 25


def test_tshark_dissects_our_rfc2190_rtp_cleanly():
    rows = dissect_rtp(rfc2190(encode_h263(3, 500), 500), 34, None, ["rfc2190.ftype"])   # static: tshark's own
    flags = {r[0] for r in rows}
    assert {"0", "1"} <= flags or {"False", "True"} <= flags      # mode A (F=0) and mode B (F=1) both read
