"""H263-1998 RTP payload format (RFC 4629) with FFmpeg's h263p encoder and decoder, and tshark."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.media.payload.h263 import H263Depacketizer, H263Packetizer, is_intra, start_codes
from tests.test_h323_q931 import write_pcap

W, H = 352, 288            # CIF, what a Polycom VSX sends
QUADRANTS = {(0, 0): (230, 40, 40), (0, 1): (40, 200, 40), (1, 0): (40, 40, 230), (1, 1): (230, 230, 40)}


def pattern(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for (r, c), rgb in QUADRANTS.items():
        img[r * H // 2:(r + 1) * H // 2, c * W // 2:(c + 1) * W // 2] = rgb
    x = (i * 16) % (W - 16)
    img[H // 2 - 8:H // 2 + 8, x:x + 16] = 255
    return img


def encode(n: int, key_at: tuple[int, ...] = (), ps: int = 1000) -> list[tuple[int, bytes]]:
    enc = av.CodecContext.create("h263p", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 30), 30
    enc.bit_rate, enc.thread_count, enc.gop_size = 384_000, 1, 300
    enc.options = {"ps": str(ps)}
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i in key_at else av.video.frame.PictureType.NONE
        out += [(p.pts * 3000, bytes(p)) for p in enc.encode(frame)]
    return out


def rtp(frames, mtu=1200):
    pk = H263Packetizer(mtu)
    out, seq = [], 100
    for ts, data in frames:
        for payload, marker in pk.packetize(data):
            assert len(payload) <= mtu
            out.append((seq, ts, marker, payload))
            seq += 1
    return out


def colours_right(img: np.ndarray) -> None:
    for (r, c), rgb in QUADRANTS.items():
        tile = img[r * H // 2 + 16:(r + 1) * H // 2 - 16, c * W // 2 + 16:(c + 1) * W // 2 - 16]
        tile = tile[np.abs(tile.astype(int) - 255).sum(axis=2) > 30]
        assert np.abs(tile.mean(axis=0) - rgb).max() < 25, (r, c, tile.mean(axis=0), rgb)


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
        colours_right(p.to_ndarray(format="rgb24"))


def test_a_lost_packet_waits_for_the_next_intra_picture():
    frames = encode(10, key_at=(6,))
    packets = rtp(frames, mtu=400)
    del packets[next(i for i, p in enumerate(packets) if p[1] == frames[2][0])]
    dp = H263Depacketizer()
    shown = [f.timestamp for s, ts, m, p in packets for f in dp.push(s, ts, m, p)]
    assert shown == [ts for ts, _ in frames[:2]] + [ts for ts, _ in frames[6:]]


def test_tshark_dissects_our_h263p_rtp_cleanly():
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed (scripts/install-test-deps.sh installs it)")
    pkts = [(5008, struct.pack("!BBHII", 0x80, (0x80 if m else 0) | 98, seq, ts, 0x9abc) + payload)
            for seq, ts, m, payload in rtp(encode(3), mtu=600)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h263p.pcap")
        write_pcap(path, pkts)
        env = dict(os.environ, HOME=tmp)
        args = [tshark, "-n", "-r", path, "-d", "udp.port==5008,rtp", "-d", "rtp.pt==98,h263p"]
        bad = subprocess.run(args + ["-Y", "_ws.malformed || _ws.expert.severity >= error"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 0 and bad.stdout.strip() == "", bad.stdout + bad.stderr
        seen = subprocess.run(args + ["-Y", "h263p", "-T", "fields", "-e", "h263p.p"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert seen.returncode == 0, seen.stderr
    assert len(seen.stdout.splitlines()) == len(pkts)              # every packet read as H.263+
