"""AudioStream: the jitter buffer sheds its spare delay on quiet frames, never in speech."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.media.audio_codecs import AudioEncoder
from gateway.media.audio_stream import AudioFormat, AudioStream


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
    fmt = AudioFormat(codec, 0)
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
