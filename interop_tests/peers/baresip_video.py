"""Helpers for video with baresip: the clip it sends (avformat source), silence for its audio, and
what it received — read from a loopback capture by tshark's RTP dissector — depacketized and
decoded, so a test can look at the colours of the picture baresip was sent."""
from __future__ import annotations

import os
import shutil
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from gateway.media.codecs import MediaFormat
from gateway.media.video_codecs import DecodeError, VideoDecoder
from gateway.media.video_stream import depacketizer_for


def clip(path: Path, rgb: tuple[int, int, int], seconds: int = 30, fps: int = 25) -> Path:
    """A Motion-JPEG .avi of one colour, CIF (baresip's H.263 encoder takes the H.263 sizes only),
    which its avformat source plays at full rate."""
    with av.open(str(path), "w") as out:
        st = out.add_stream("mjpeg", rate=fps)
        st.width, st.height, st.pix_fmt = 352, 288, "yuvj420p"
        st.time_base = Fraction(1, fps)
        picture = np.empty((288, 352, 3), np.uint8)
        picture[:] = rgb
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def silence(path: Path, seconds: int = 30) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(b"\0\0\0\0" * 48000 * seconds)
    return path


def received_rtp(pcap: Path, lo: int, hi: int, before: float | None = None) -> dict[int, list[tuple[int, int, bool, bytes]]]:
    """RTP packets to ports lo..hi, as tshark reads them: payload type → (seq, ts, marker, payload);
    ``before``: only those captured before this time (epoch seconds: the room as it was then, not
    after the first participant left)."""
    env = dict(os.environ, HOME=str(pcap.parent))
    when = f" && frame.time_epoch < {before:.6f}" if before is not None else ""
    r = subprocess.run([shutil.which("tshark"), "-n", "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE",
                        "-Y", f"rtp && udp.dstport >= {lo} && udp.dstport <= {hi}{when}", "-T", "fields",
                        "-e", "rtp.p_type", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.marker",
                        "-e", "rtp.payload"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out: dict[int, list] = {}
    for line in r.stdout.splitlines():
        pt, seq, ts, marker, payload = (line.split("\t") + [""] * 5)[:5]
        if not pt or not payload:
            continue
        out.setdefault(int(pt), []).append((int(seq), int(ts), marker in ("1", "True"),
                                            bytes.fromhex(payload.replace(":", ""))))
    return out


def last_picture(fmt: MediaFormat, packets) -> tuple[np.ndarray | None, int]:
    dp = depacketizer_for(fmt)
    dec = VideoDecoder(fmt.codec.name)
    last, n = None, 0
    for seq, ts, marker, payload in packets:
        for frame in dp.push(seq, ts, marker, payload):
            try:
                pics = dec.decode(frame.data)
            except DecodeError:
                continue
            for p in pics:
                last, n = p.to_ndarray(format="rgb24"), n + 1
    return last, n


def cell_colour(picture: np.ndarray, rect) -> np.ndarray:
    h, w, _ = picture.shape
    x, y, cw, ch = rect
    return picture[int((y + ch / 4) * h):int((y + 3 * ch / 4) * h),
                   int((x + cw / 4) * w):int((x + 3 * cw / 4) * w)].reshape(-1, 3).mean(axis=0)
