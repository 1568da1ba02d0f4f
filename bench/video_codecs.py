"""Per-frame cost of the video building blocks on this machine: compose, encode, decode.

    .venv/bin/python bench/video_codecs.py [--frames 150]

Prints milliseconds per frame and the share of one core at 30 fps; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from av import VideoFrame

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.catalogue import default_catalogue  # noqa: E402
from gateway.media.codecs import MediaFormat, rules_for  # noqa: E402
from gateway.media.layout import Compositor  # noqa: E402
from gateway.media.video_codecs import VideoDecoder, VideoEncoder, encoder_settings  # noqa: E402

CAT = default_catalogue()


def moving(w: int, h: int, i: int, base: np.ndarray) -> np.ndarray:
    return np.roll(base[:h, :w], i * 4, axis=1)


def report(what: str, seconds: float, n: int) -> None:
    ms = seconds / n * 1000
    print(f"{what:<44} {ms:7.2f} ms/frame  {ms * 30 / 10:6.1f} % of a core at 30 fps")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150)
    n = ap.parse_args().frames
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    # decoders hand the compositor yuv420p frames: so do we
    cif = [VideoFrame.from_ndarray(moving(352, 288, i, base), format="rgb24").reformat(format="yuv420p")
           for i in range(n)]
    comp = Compositor(1280, 720, "cp-2x2")
    spent, pics = 0.0, []
    for i in range(n):
        t0 = time.process_time()
        pic = comp.compose([cif[i], cif[(i + 1) % n], cif[(i + 2) % n], cif[(i + 3) % n]], active=0)
        spent += time.process_time() - t0
        pics.append(VideoFrame.from_ndarray(pic.to_ndarray(), format="yuv420p"))  # the compositor reuses its frame
    report("compose cp-2x2 720p from 4 new CIF tiles (yuv420p)", spent, n)
    cases = [("H264", {"profile-level-id": "42e01f", "packetization-mode": "1"}, 1024, pics),
             ("VP8", {}, 1024, pics),
             ("H263", {"CIF": "1"}, 512, cif),
             ("H263-1998", {"CIF": "1"}, 512, cif)]
    for codec, fmtp, kbps, src in cases:
        c = CAT.get(codec)
        s = encoder_settings(MediaFormat(c, 96, rules_for(c).from_fmtp(c, fmtp)), kbps)
        enc = VideoEncoder(s)
        t0 = time.process_time()
        out = [f for i, y in enumerate(src) for f in enc.encode(y, i * 3000)]
        report(f"encode {codec} {s.width}x{s.height} {s.kbps} kbit/s", time.process_time() - t0, n)
        dec = VideoDecoder(codec)
        t0 = time.process_time()
        for f in out:
            dec.decode(f.data)
        report(f"decode {codec} {s.width}x{s.height}", time.process_time() - t0, n)


if __name__ == "__main__":
    main()
