"""H.264 RTP payload format cost: packetize one pre-encoded 720p30 stream for a receiver (mode 0 and
mode 1), and reassemble it. Prints figures and the share of one core per receiver; asserts nothing.

    .venv/bin/python bench/h264_payload.py [--seconds 10] [--bitrate 2000k]
"""
from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.media.payload.h264 import H264Depacketizer, H264Packetizer  # noqa: E402


def encode(seconds: float, bitrate: str) -> list[tuple[int, bytes]]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 1280, 720, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 90000), 30
    enc.thread_count = 1
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "keyint": "90",
                   "slice-max-size": "1100", "bitrate": bitrate}
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    out = []
    for i in range(int(seconds * 30)):
        img = np.roll(base, i * 8, axis=1)                 # moving texture: realistic P-frame sizes
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 3000
        out += [(p.pts, bytes(p)) for p in enc.encode(frame)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bitrate", default="2000k")
    args = ap.parse_args()
    aus = encode(args.seconds, args.bitrate)
    total = sum(len(a) for _, a in aus)
    print(f"stream: {len(aus)} frames 720p30, {total * 8 / args.seconds / 1000:.0f} kbit/s")
    for mode in (0, 1):
        pk = H264Packetizer(mode, 1200)
        t0 = time.process_time()
        packets = [(ts, p, m) for ts, au in aus for p, m in pk.packetize(au)]
        cpu = time.process_time() - t0
        dp = H264Depacketizer()
        t0 = time.process_time()
        frames = 0
        for seq, (ts, p, m) in enumerate(packets):
            frames += len(dp.push(seq & 0xFFFF, ts, m, p))
        cpu_rx = time.process_time() - t0
        print(f"mode {mode}: {len(packets)} packets; packetize {cpu / len(packets) * 1e6:.1f} µs/packet = "
              f"{100 * cpu / args.seconds:.3f} % of a core per receiver; reassemble "
              f"{cpu_rx / len(packets) * 1e6:.1f} µs/packet = {100 * cpu_rx / args.seconds:.3f} % of a core "
              f"per source ({frames} frames)")


if __name__ == "__main__":
    main()
