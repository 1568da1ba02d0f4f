"""AudioStream: the jitter buffer sheds its spare delay on quiet frames, never in speech."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.media.audio_codecs import AudioEncoder
from gateway.media.audio_stream import AudioStream
from gateway.media.codecs import MediaFormat


class _Transport:
    """Just enough of an RtpSession for AudioStream: nothing is sent in this test."""

    on_packet = None

    def send(self, payload, pt, step):
        pass


def _frames(pattern: str) -> list[np.ndarray]:
    """'T' = 20 ms of a -20 dBFS 1 kHz tone, '.' = 20 ms of silence (8 kHz)."""
    out, n = [], 0
    for c in pattern:
        t = (np.arange(160) + n) / 8000
        tone = 3277 * np.sin(2 * np.pi * 1000 * t)
        out.append((tone if c == "T" else np.zeros(160)).astype(np.int16))
        n += 160
    return out


@pytest.mark.parametrize("path", ["pull_level", "pull"])
def test_spare_delay_is_shed_on_quiet_frames_and_every_tone_frame_is_heard(path):
    codec = default_catalogue().get("PCMU")
    fmt = MediaFormat(codec, 0)
    now = [100.0]
    stream = AudioStream(_Transport(), fmt, fmt, clock=lambda: now[0])
    enc = AudioEncoder(codec, in_rate=8000)
    # 6 s of silence arriving 18 ms before each tick (the buffer settles), then speech -
    # 1 s of tone, 0.2 s pause, eight times - arriving 20 ms earlier (the path got
    # shorter): a frame of delay is to be shed, and it must not be a frame of tone
    settle, pattern = "." * 300, ("T" * 50 + "." * 10) * 8
    payloads = [enc.encode(f) for f in _frames(settle + pattern)]
    arrivals = [100.0 + k * 0.02 - (0.018 if k < len(settle) else 0.038) for k in range(len(payloads))]
    heard_tone, shed_settled, i = 0, 0, 0
    for k in range(len(payloads) + 10):
        now[0] = 100.0 + k * 0.02
        while i < len(payloads) and arrivals[i] <= now[0]:
            stream._on_packet(0, 1000 + i, i * 160, i == 0, payloads[i], 0x1234, arrivals[i])
            i += 1
        if k == len(settle):
            shed_settled = stream.jitter.stats.drift_adjustments
        if path == "pull_level":  # the mixer's path
            level = stream.pull_level()
        else:  # the plain one (e.g. the PIN prompt keeps the buffer draining with it)
            pcm = stream.pull()
            level = None if pcm is None else float(np.mean(pcm.astype(np.float64) ** 2))
        # the tone is ~5.4e6 (int16²), silence ~0; at 16 kHz the resampler smears a few
        # samples of a burst into the next frame: "heard" is at least half the power
        if level is not None and level > 2.5e6:
            heard_tone += 1
    st = stream.jitter.stats
    assert st.drift_adjustments > shed_settled  # the spare delay went
    assert heard_tone == pattern.count("T")  # ... and not a frame of the tone with it
    assert st.lost == 0 and st.late == 0


def _tone_packets(codec_name: str, ptime_ms: int, seconds: float, freq: float = 1000.0):
    """Encoded packets of a -20 dBFS tone, ``ptime_ms`` each: (payload, RTP timestamp step)."""
    codec = default_catalogue().get(codec_name)
    rate = 16000
    enc = AudioEncoder(codec, in_rate=rate, ptime_ms=ptime_ms)
    n = rate * ptime_ms // 1000
    total = int(seconds * 1000 / ptime_ms)
    t = np.arange(total * n) / rate
    pcm = (3277 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return codec, [enc.encode(pcm[k * n:(k + 1) * n]) for k in range(total)], codec.clock_rate * ptime_ms // 1000


@pytest.mark.parametrize("codec_name,ptime_ms", [("PCMU", 30), ("PCMU", 10), ("G722", 40), ("opus", 60)])
def test_packets_of_another_duration_are_reframed_into_continuous_20ms_frames(codec_name, ptime_ms):
    # the SDP (or H.245) said 20 ms, the sender sends ptime_ms: what comes out of the leg
    # each tick is 20 ms of the same unbroken tone - no gaps, no repeated or lost samples
    codec, payloads, step = _tone_packets(codec_name, ptime_ms, 3.0)
    fmt = MediaFormat(codec, 0 if codec_name == "PCMU" else 9 if codec_name == "G722" else 111)
    now = [100.0]
    stream = AudioStream(_Transport(), fmt, fmt, clock=lambda: now[0])
    arrivals = [100.0 + k * ptime_ms / 1000 - 0.002 for k in range(len(payloads))]
    out, i = [], 0
    for k in range(int(3.3 / 0.02)):
        now[0] = 100.0 + k * 0.02
        while i < len(payloads) and arrivals[i] <= now[0]:
            stream._on_packet(fmt.payload_type, 7 + i, i * step, i == 0, payloads[i], 0x55, arrivals[i])
            i += 1
        level = stream.pull_level()
        out.append(stream.frame().copy() if level is not None else None)
    assert stream.jitter.stats.retimed == 1 and stream.jitter.frame_ms == ptime_ms
    frames = [f for f in out if f is not None]
    assert all(len(f) == 320 for f in frames)
    # from the first re-framed frame on, every tick has audio until the stream ends
    first = next(k for k, f in enumerate(out) if f is not None)
    heard = out[first + 10:first + 120]
    assert all(f is not None for f in heard)
    # ...and it is one tone with one phase: a single 1 kHz sinusoid fits 2.2 s of it
    sig = np.concatenate(heard).astype(np.float64)
    t = np.arange(len(sig)) / 16000
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, sig, rcond=None)
    residual = sig - basis @ coef
    assert np.sum(residual ** 2) / np.sum(sig ** 2) < 0.01, codec_name
    assert abs(20 * np.log10(np.hypot(*coef) / 32768) - (-20)) < 1.5  # at the level sent
    st = stream.jitter.stats
    assert st.lost == 0 and st.late == 0 and st.underruns <= 1
