"""Encoders set up from negotiation, through PyAV in worker threads: the size and rate a receiver can take,
the right colours after a round trip in every codec, and a keyframe on the very frame it is asked for."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.media.codecs import MediaFormat, rules_for
from gateway.media.payload.h264 import split_annexb
from gateway.media.video_codecs import CODEC_POOL, VideoDecoder, VideoEncoder, encoder_settings

CAT = default_catalogue()
QUADRANTS = {(0, 0): (230, 40, 40), (0, 1): (40, 200, 40), (1, 0): (40, 40, 230), (1, 1): (230, 230, 40)}


def fmt(codec: str, fmtp: dict[str, str], cap: int | None = None, pt: int = 96) -> MediaFormat:
    c = CAT.get(codec) if codec in CAT else None
    if c is None:
        pytest.fail(f"{codec} is not in the catalogue")
    return MediaFormat(c, pt, rules_for(c).from_fmtp(c, fmtp), bitrate_cap=cap)


@pytest.mark.parametrize("codec, fmtp, cap, want", [
    ("H264", {"profile-level-id": "42e01f", "packetization-mode": "1"}, None, (1280, 720, 30, 1024)),
    ("H264", {}, None, (176, 144, 15, 1024)),                                 # absent: level 1, QCIF
    ("H264", {"profile-level-id": "42800d"}, 384_000, (352, 288, 30, 384)),   # Polycom, b=AS:384
    ("H264", {"profile-level-id": "42e01f", "max-br": "600"}, None, (1280, 720, 30, 600)),
    ("H263", {"CIF": "2", "QCIF": "1"}, None, (352, 288, 14.99, 1024)),
    ("H263-1998", {"QCIF": "1"}, None, (176, 144, 29.97, 1024)),
    ("VP8", {"max-fs": "1200", "max-fr": "15"}, None, (640, 360, 15, 1024)),
    ("H264", {"profile-level-id": "42e01f"}, 512_000, (640, 360, 30, 512)),     # a commune's b=AS:512
    ("VP8", {}, 256_000, (640, 360, 30, 256)),
])
def test_the_encoder_follows_what_the_receiver_can_take(codec, fmtp, cap, want):
    s = encoder_settings(fmt(codec, fmtp, cap), 1024)
    assert (s.width, s.height, s.fps, s.kbps) == want


def pattern(w: int, h: int, i: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for (r, c), rgb in QUADRANTS.items():
        img[r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2] = rgb
    x = (i * 8) % (w - 8)
    img[:, x:x + 8] = 255
    return img


def colours_right(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    for (r, c), rgb in QUADRANTS.items():
        tile = img[r * h // 2 + h // 10:(r + 1) * h // 2 - h // 10, c * w // 2 + w // 10:(c + 1) * w // 2 - w // 10]
        tile = tile[np.abs(tile.astype(int) - 255).sum(axis=2) > 30]
        assert np.abs(tile.mean(axis=0) - rgb).max() < 25, (r, c, tile.mean(axis=0))


@pytest.mark.parametrize("codec, fmtp", [
    ("H264", {"profile-level-id": "42801e", "packetization-mode": "0"}),
    ("H263", {"CIF": "1"}),
    ("H263-1998", {"CIF": "1"}),
    ("VP8", {"max-fs": "1620"}),
])
def test_round_trip_in_worker_threads_keeps_colours_and_gives_a_keyframe_when_asked(codec, fmtp):
    s = encoder_settings(fmt(codec, fmtp), 512)
    enc, dec = VideoEncoder(s), VideoDecoder(codec)
    assert enc.ctx.thread_count == 1 and dec.ctx.thread_count == 1
    got = []
    for i in range(12):
        img = pattern(s.width, s.height, i)
        frames = CODEC_POOL.submit(enc.encode, img, i * 3000, i == 7).result(timeout=10)
        assert len(frames) == 1                     # no lookahead: one frame in, one out
        got.append(frames[0])
        for pic in CODEC_POOL.submit(dec.decode, frames[0].data).result(timeout=10):
            colours_right(pic.to_ndarray(format="rgb24"))
    assert [f.keyframe for f in got] == [True] + [False] * 6 + [True] + [False] * 4
    assert dec.frames == 12
    if codec == "H263":
        assert got[0].mb_info                       # macroblock info for RFC 2190 mode B
    if codec == "H264":
        assert max(len(n) for f in got for n in split_annexb(f.data)) <= s.mtu - 100   # slices fit mode 0
