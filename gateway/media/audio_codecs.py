"""Audio codecs for the media plane: decode RTP payloads to 16 kHz mono int16, encode back.

The mixer runs at 16 kHz mono int16 in 20 ms frames (320 samples).  Per codec:

* **PCMU / PCMA** (G.711): numpy lookup tables built at import from the ITU-T G.711
  formulas (bit-exact with FFmpeg's pcm_mulaw / pcm_alaw, checked by the tests).
  PyAV costs ~17 µs a frame each way for what is one table lookup; the tables cost ~1-2 µs.
  8 ↔ 16 kHz goes through :class:`Resampler` (polyphase FIR in numpy, stateful).
* **G722**: FFmpeg's g722 through PyAV (native 16 kHz: no resampling).  One
  ``AudioFrame`` is reused for encoding.
* **opus**: libopus called directly (ctypes), the very library PyAV bundles; opened at
  16 kHz so nothing is resampled, with in-band FEC (``decode_fec``) and libopus PLC,
  neither of which FFmpeg's libopus wrapper exposes.  If no libopus can be found,
  PyAV's libopus is used instead (48 kHz + resampling, no FEC).

Bad payloads never raise from :meth:`AudioDecoder.decode`: they are counted in
``stats.errors`` and concealed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import glob
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np
from av.audio.frame import AudioFrame

from gateway.catalogue import Codec

__all__ = [
    "AudioDecoder",
    "AudioEncoder",
    "DecoderStats",
    "Resampler",
    "UnsupportedCodec",
    "alaw_decode",
    "alaw_encode",
    "dominant_frequency",
    "level_dbfs",
    "opus_library",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

MIX_RATE = 16000
FADE_FRAMES = 3  # repeat-and-fade reaches silence after this many lost frames


class UnsupportedCodec(ValueError):
    """The catalogue codec has no audio implementation here (e.g. telephone-event, video)."""


# ============================================================================ G.711 tables

def _ulaw_to_linear(code: int) -> int:
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def _alaw_to_linear(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if (a & 0x80) else -t


def _encode_table(decode: Callable[[int], int], mask: int) -> np.ndarray:
    """int16 → G.711 code, for every int16 value (indexed by the value viewed as uint16).

    G.711's decision thresholds lie halfway between adjacent reconstruction values
    (rounded, in the 14-bit domain), so the table is built from the decoder formula:
    for each pair of neighbouring codes, every magnitude below their midpoint maps to
    the smaller code.  This is the same construction FFmpeg uses, hence bit-exact.
    """
    half = [0] * 8192                 # magnitude (14-bit) → code index 0..127
    j = 1
    for i in range(127):
        v = (decode(i ^ mask) + decode((i + 1) ^ mask) + 4) >> 3
        while j < v:
            half[j] = i
            j += 1
    while j < 8192:
        half[j] = 127
        j += 1
    table14 = np.empty(16384, dtype=np.uint8)
    table14[8192] = mask
    for m in range(1, 8192):
        table14[8192 + m] = half[m] ^ mask
        table14[8192 - m] = half[m] ^ (mask ^ 0x80)
    table14[0] = table14[1]
    values = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    return table14[(values + 32768) >> 2]


ULAW_DECODE = np.array([_ulaw_to_linear(i) for i in range(256)], dtype=np.int16)
ALAW_DECODE = np.array([_alaw_to_linear(i) for i in range(256)], dtype=np.int16)
# encode tables are indexed by the int16 sample reinterpreted as uint16
ULAW_ENCODE = _encode_table(_ulaw_to_linear, 0xFF)
ALAW_ENCODE = _encode_table(_alaw_to_linear, 0xD5)


def ulaw_decode(payload: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return ULAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    return ALAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


# ============================================================================ resampling

def _lowpass(taps: int, cutoff: float, gain: float) -> np.ndarray:
    """Kaiser-windowed sinc low-pass, cutoff in cycles/sample (``taps`` odd: linear phase)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, 7.0)
    return h / h.sum() * gain


class Resampler:
    """Stateful int16 mono resampler; history is kept between calls, so frames join seamlessly.

    Integer ratios (8k↔16k, 16k↔48k, ...) use a numpy polyphase FIR.  Its cut-off is
    exactly the lower Nyquist frequency, which makes it a Nyquist (half-band for 2:1)
    filter: one phase is a pure delay and costs a slice, not a convolution.  Other
    ratios, or frames whose length is not a multiple of the decimation factor, go
    through FFmpeg's swresample via PyAV.
    """

    TAPS_PER_PHASE = 24

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} → {rate_out}")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._av: av.AudioResampler | None = None
        self._fn: Callable[[np.ndarray], np.ndarray]
        if rate_in == rate_out:
            self._fn = self._same
            return
        if rate_out % rate_in == 0:
            r = rate_out // rate_in
            self._fn = self._upsample
        elif rate_in % rate_out == 0:
            r = rate_in // rate_out
            self._fn = self._downsample
        else:
            self._fn = self._swr
            return
        self._r = r
        ntaps = self.TAPS_PER_PHASE * r - 1
        h = _lowpass(ntaps, 0.5 / r, float(r) if self._fn == self._upsample else 1.0)
        # per phase: (kernel, single-tap index or -1, single-tap weight)
        self._phases: list[tuple[np.ndarray, int, float]] = []
        for p in range(r):
            k = h[p::r].copy()
            big = np.flatnonzero(np.abs(k) > 1e-9 * np.abs(h).max())
            if len(big) == 1:
                self._phases.append((k, int(big[0]), float(k[big[0]])))
            else:
                self._phases.append((k, -1, 0.0))
        if self._fn == self._upsample:
            self._hlen = self.TAPS_PER_PHASE - 1
        else:
            self._hlen = -(-ntaps // r) * r + r
        self._hist = np.zeros(self._hlen, dtype=np.float64)

    def resample(self, pcm: np.ndarray) -> np.ndarray:
        return self._fn(pcm)

    def skip(self, pcm: np.ndarray) -> None:
        """Advance over ``pcm`` without computing output: only the filter history moves on.

        For a frame nobody listens to (the mixer did not select its member), so
        that the next frame that *is* resampled joins the stream seamlessly.
        """
        fn = self._fn
        if fn == self._same:
            return
        if fn == self._swr or (fn == self._downsample and len(pcm) % self._r):
            self._swr(pcm)
            return
        n, hl = len(pcm), self._hlen
        if n >= hl:
            self._hist = pcm[n - hl:].astype(np.float64)
        else:
            self._hist = np.concatenate((self._hist, pcm))[n:]

    @staticmethod
    def _same(pcm: np.ndarray) -> np.ndarray:
        return np.asarray(pcm, dtype=np.int16)

    @staticmethod
    def _to_int16(y: np.ndarray) -> np.ndarray:
        np.minimum(y, 32767.0, out=y)
        np.maximum(y, -32768.0, out=y)
        return y.astype(np.int16)

    def _upsample(self, pcm: np.ndarray) -> np.ndarray:
        n = len(pcm)
        hl = self._hlen
        x = np.concatenate((self._hist, pcm))
        self._hist = x[n:]
        r = self._r
        out = np.empty(n * r, dtype=np.float64)
        for p, (k, j0, w) in enumerate(self._phases):
            if j0 >= 0:  # y[n·r+p] = w · x[n - j0]
                out[p::r] = x[hl - j0:hl - j0 + n] * w
            else:
                i0 = hl - (len(k) - 1)
                out[p::r] = np.convolve(x[i0:], k, "valid")[:n]
        return self._to_int16(out)

    def _downsample(self, pcm: np.ndarray) -> np.ndarray:
        n = len(pcm)
        r = self._r
        if n % r:
            return self._swr(pcm)
        hl = self._hlen
        x = np.concatenate((self._hist, pcm))
        self._hist = x[n:]
        m = n // r
        out: np.ndarray | None = None
        for q, (k, j0, w) in enumerate(self._phases):
            if j0 >= 0:  # y[i] = w · x[(i - j0)·r - q]
                start = hl - q - r * j0
                part = x[start:start + r * m:r] * w
            else:
                start = hl - q - r * (len(k) - 1)
                part = np.convolve(x[start:hl - q + r * m:r], k, "valid")
            out = part if out is None else np.add(out, part, out=out)
        assert out is not None
        return self._to_int16(out)

    def _swr(self, pcm: np.ndarray) -> np.ndarray:
        if self._av is None:
            self._av = av.AudioResampler(format="s16", layout="mono", rate=self.rate_out)
            self._pts = 0
        f = AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                    format="s16", layout="mono")
        f.sample_rate = self.rate_in
        f.pts = self._pts
        self._pts += len(pcm)
        outs = self._av.resample(f)
        if not outs:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.int16, copy=False)


# ============================================================================ libopus (ctypes)

OPUS_APPLICATION_VOIP = 2048
OPUS_SET_BITRATE = 4002
OPUS_SET_COMPLEXITY = 4010
OPUS_SET_INBAND_FEC = 4012
OPUS_SET_PACKET_LOSS_PERC = 4014
OPUS_SET_DTX = 4016
OPUS_SET_SIGNAL = 4024
OPUS_SIGNAL_VOICE = 3001
OPUS_RESET_STATE = 4028
# An Opus packet this small carries no sound: libopus codes digital silence in 3 bytes
# (TOC + 2) and DTX frames in 1-2; any audible frame, even at 6 kbit/s, takes ~15 bytes.
OPUS_SILENCE_BYTES = 3
# Silent packets decoded after sound before decoding stops (the first ones still carry
# the tail of the last sound through the codec's overlap/LPC memory).
OPUS_SILENCE_DECODED = 2
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Encoder complexity 0..10.  Measured per 20 ms mono 16 kHz frame on the 2-core dev box:
# 1 → 60-90 µs, 5 → 160-300 µs, 10 → 340-360 µs.  1 keeps a room's shared encoder cheap;
# raise it per encoder where CPU allows.
OPUS_DEFAULT_COMPLEXITY = 1

_opus_lib: ctypes.CDLL | None = None
_opus_tried = False


def _find_opus() -> str | None:
    env = os.environ.get("CAU_LIBOPUS")
    if env:
        return env
    found = ctypes.util.find_library("opus")
    if found:
        return found
    # the libopus that PyAV's wheel bundles (av.libs/libopus-<hash>.so.0)
    base = os.path.dirname(os.path.dirname(av.__file__))
    for pattern in ("av.libs/libopus*.so*", "av/.dylibs/libopus*.dylib", "av.libs/libopus*.dll"):
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    return None


def opus_library() -> ctypes.CDLL | None:
    """The libopus in use (system, or the one bundled with PyAV), or None."""
    global _opus_lib, _opus_tried
    if _opus_tried:
        return _opus_lib
    _opus_tried = True
    path = _find_opus()
    if path is None:
        log.warning("libopus not found: Opus falls back to PyAV (48 kHz + resampling, no FEC)")
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        log.warning("cannot load libopus %s (%s): Opus falls back to PyAV", path, exc)
        return None
    vp, ip, i = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, i, ip]
    lib.opus_decoder_create.restype = vp
    lib.opus_decoder_destroy.argtypes = [vp]
    lib.opus_decode.argtypes = [vp, vp, ctypes.c_int32, vp, i, i]
    lib.opus_decode.restype = i
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, i, i, ip]
    lib.opus_encoder_create.restype = vp
    lib.opus_encoder_destroy.argtypes = [vp]
    lib.opus_encode.argtypes = [vp, vp, i, vp, ctypes.c_int32]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encoder_ctl.restype = i
    lib.opus_decoder_ctl.restype = i
    lib.opus_packet_get_nb_samples.argtypes = [vp, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = i
    lib.opus_strerror.argtypes = [i]
    lib.opus_strerror.restype = ctypes.c_char_p
    _opus_lib = lib
    return lib


def _opus_error(lib: ctypes.CDLL, code: int) -> str:
    return (lib.opus_strerror(code) or b"?").decode()


# ============================================================================ decoder

@dataclass
class DecoderStats:
    decoded: int = 0     # payloads decoded
    concealed: int = 0   # frames produced by concealment (FEC, PLC or repeat-and-fade)
    errors: int = 0      # corrupt or undecodable payloads (each also concealed)
    repeats: int = 0     # payloads equal to the previous one whose decoding was skipped (see decoder)


class AudioDecoder:
    """RTP payload → int16 mono at ``out_rate``.  Never raises on bad payloads."""

    def __init__(self, codec: Codec, out_rate: int = MIX_RATE) -> None:
        if codec.media != "audio" or codec.av_decoder is None:
            raise UnsupportedCodec(f"{codec.name} is not an audio codec this decoder can handle")
        self.codec = codec
        self.out_rate = out_rate
        self.stats = DecoderStats()
        self._last: np.ndarray | None = None   # last output frame, for repeat-and-fade
        self._lost = 0                          # consecutive concealed frames
        self._flip = False
        self._resampler: Resampler | None = None
        self._opus = None
        self._av = None
        self._pending: np.ndarray | None = None  # this frame at codec_rate, not yet resampled
        self._out: np.ndarray | None = None  # this frame at out_rate, once output() made it
        self._want: int | None = None  # samples output() must return (concealment), else None
        self._quiet = 0  # opus: consecutive silent packets
        self._asleep = False  # opus: silent packets were skipped, reset before decoding again
        self._at_out = False  # the frame being produced is already at out_rate
        self._last_at_out = False  # _last is at out_rate (else codec_rate)
        self._fade_out_rate = False  # output() fades the pending frame in (after a concealed gap)
        self._silence = np.zeros(0, dtype=np.int16)  # replaced per codec below (read-only)
        # repeated payloads (muted endpoints send the same silence packet over and over):
        # G.711 is stateless, so an equal payload decodes to the same audio; a stateful
        # decoder (G.722 ADPCM) fed the same payload settles on a fixed point, and once
        # it has given the same audio twice in a row it is not asked again
        self._rep_in: bytes | None = None
        self._rep_out: np.ndarray | None = None
        self._rep_same = False
        self._repeatable = codec.name.lower() != "opus"  # libopus's decoder is not deterministic that way
        self._level_of: np.ndarray | None = None  # decode_level's last frame and its level
        self._level = 0.0
        name = codec.name.lower()
        if name in ("pcmu", "pcma"):
            self._table = ULAW_DECODE if name == "pcmu" else ALAW_DECODE
            self.codec_rate = 8000
            self._decode = self._decode_g711
        elif name == "opus" and opus_library() is not None:
            lib = opus_library()
            assert lib is not None
            self.codec_rate = out_rate if out_rate in OPUS_RATES else 48000
            err = ctypes.c_int(0)
            self._opus = lib.opus_decoder_create(self.codec_rate, 1, ctypes.byref(err))
            if not self._opus or err.value != 0:
                raise RuntimeError(f"opus_decoder_create failed: {_opus_error(lib, err.value)}")
            self._lib = lib
            self._obuf = np.zeros(self.codec_rate * 120 // 1000, dtype=np.int16)  # 120 ms max
            self._optr = self._obuf.ctypes.data
            self._omax = len(self._obuf)
            self._decode = self._decode_opus
        else:
            ctx = av.CodecContext.create(codec.av_decoder, "r")
            rate = codec.sample_rate if name != "opus" else 48000
            ctx.sample_rate = rate
            ctx.layout = "mono"
            ctx.open()
            self._av = ctx
            self.codec_rate = rate
            self._decode = self._decode_av
        if self.codec_rate != out_rate:
            self._resampler = Resampler(self.codec_rate, out_rate)
        # default frame length for concealment before anything was decoded
        self._frame_samples = out_rate * (codec.ptime_ms or 20) // 1000

    @property
    def packet_samples(self) -> int:
        """Samples at ``out_rate`` of the last packet decoded (its duration)."""
        return self._frame_samples

    def __del__(self) -> None:
        if getattr(self, "_opus", None):
            self._lib.opus_decoder_destroy(self._opus)
            self._opus = None

    # -- codec paths: return samples at codec_rate, raise on corrupt input
    def _decode_g711(self, payload: bytes) -> np.ndarray:
        if payload == self._rep_in:
            self.stats.repeats += 1
            return self._rep_out  # type: ignore[return-value]
        if not payload:
            raise ValueError("empty G.711 payload")
        out = self._table[np.frombuffer(payload, dtype=np.uint8)]
        out.flags.writeable = False
        self._rep_in, self._rep_out = payload, out
        return out

    def _decode_opus(self, payload: bytes) -> np.ndarray:
        size = len(payload)
        if not size:  # libopus would take an empty packet as a loss; on the wire it is an error
            raise ValueError("empty opus payload")
        if size <= OPUS_SILENCE_BYTES:
            # silence (or DTX): after the first few, stop decoding; the decoder is reset
            # before the next sound, which then starts as a fresh stream would
            self._quiet += 1
            if self._quiet > OPUS_SILENCE_DECODED:
                n = self._lib.opus_packet_get_nb_samples(payload, size, self.codec_rate)
                if n < 0:
                    raise ValueError(f"opus: {_opus_error(self._lib, n)}")
                self._asleep = True
                silence = self._silence
                if len(silence) != n:
                    silence = self._silence = np.zeros(n, dtype=np.int16)
                    silence.flags.writeable = False
                return silence
        else:
            self._quiet = 0
            if self._asleep:
                self._opus_wake()
        n = self._lib.opus_decode(self._opus, payload, size, self._optr, self._omax, 0)
        if n < 0:
            raise ValueError(f"opus: {_opus_error(self._lib, n)}")
        return self._obuf[:n].copy()

    def _opus_wake(self) -> None:
        if self._asleep:
            self._asleep = False
            self._lib.opus_decoder_ctl(ctypes.c_void_p(self._opus), ctypes.c_int(OPUS_RESET_STATE))

    def _decode_av(self, payload: bytes) -> np.ndarray:
        if payload == self._rep_in:
            if self._rep_same:
                self.stats.repeats += 1
                return self._rep_out  # type: ignore[return-value]
            out = self._decode_av_once(payload)
            self._rep_same = np.array_equal(out, self._rep_out)
        else:
            self._rep_in = None
            out = self._decode_av_once(payload)
            if self._repeatable:
                self._rep_in, self._rep_same = payload, False
        out.flags.writeable = False
        self._rep_out = out
        return out

    def _decode_av_once(self, payload: bytes) -> np.ndarray:
        if not payload:
            raise ValueError("empty payload")
        frames = self._av.decode(av.Packet(payload))
        if len(frames) == 1:
            f = frames[0]
            return np.frombuffer(f.planes[0], dtype=np.int16, count=f.samples).copy()
        if not frames:
            raise ValueError("decoder returned no audio")
        return np.concatenate([np.frombuffer(f.planes[0], dtype=np.int16, count=f.samples) for f in frames])

    # -- public
    def decode(self, payload: bytes) -> np.ndarray:
        """One RTP payload → its duration of int16 mono at ``out_rate``; bad payload → concealment."""
        self._advance(self._native(payload), None)
        return self.output()

    def conceal(self, samples: int, next_payload: bytes | None = None) -> np.ndarray:
        """Audio for ``samples`` lost samples (at ``out_rate``).

        Opus: in-band FEC from ``next_payload`` when given, else libopus PLC.
        Others: the last frame repeated (alternately time-reversed, so the waveform
        stays continuous at every seam) fading to silence over ``FADE_FRAMES`` frames.
        """
        self._advance(self._conceal_native(samples, next_payload), samples)
        return self.output()

    # -- two-step use (the mixer): level first, the out_rate frame only if it is heard
    def decode_level(self, payload: bytes) -> float:
        """Decode ``payload`` at the codec's own rate and return its mean square (int16² units).

        The frame at ``out_rate`` is made only if :meth:`output` asks for it before
        the next decode/conceal (resampling is skipped for frames nobody hears; the
        resampler's history still moves on, so a frame that is heard joins seamlessly).
        """
        pcm = self._native(payload)
        self._advance(pcm, None)
        if pcm is self._level_of:
            return self._level
        self._level_of = pcm
        self._level = level = 0.0 if pcm is self._silence else mean_square(pcm)
        return level

    def conceal_level(self, samples: int, next_payload: bytes | None = None) -> float:
        """Like :meth:`conceal`, but returns the mean square; :meth:`output` gives the audio."""
        pcm = self._conceal_native(samples, next_payload)
        self._advance(pcm, samples)
        return mean_square(pcm)

    def output(self) -> np.ndarray:
        """The last decoded/concealed frame at ``out_rate`` (resampled on first request)."""
        out = self._out
        if out is None:
            pcm = self._pending
            if pcm is None:
                return np.zeros(self._frame_samples, dtype=np.int16)
            self._pending = None
            if self._resampler is not None:
                pcm = self._resampler.resample(pcm)
                if self._fade_out_rate:
                    self._fade_out_rate = False
                    pcm = self._fade_in(pcm, self.out_rate)
            want = self._want
            if want is not None and len(pcm) != want:
                pcm = _fit(pcm, want)
            self._out = out = pcm
        return out

    # -- internals: everything below works at codec_rate
    def _advance(self, pcm: np.ndarray, want: int | None) -> None:
        prev = self._pending
        if prev is not None and self._resampler is not None:
            self._resampler.skip(prev)  # last frame was never heard: keep the filter history
        self._want = want
        if self._at_out:  # repeat-and-fade of a resampled codec: already at out_rate
            self._at_out = False
            self._pending = None
            self._out = pcm if want is None or len(pcm) == want else _fit(pcm, want)
        else:
            self._pending = pcm
            self._out = None

    def _native(self, payload: bytes) -> np.ndarray:
        try:
            pcm = self._decode(payload)
        except Exception as exc:  # corrupt input from the network: count and conceal
            self.stats.errors += 1
            log.debug("%s: undecodable payload (%d bytes): %s", self.codec.name, len(payload), exc)
            return self._conceal_native(self._frame_samples, None)
        self.stats.decoded += 1
        self._fade_out_rate = False
        if self._lost:
            if self._resampler is None:
                pcm = self._fade_in(pcm, self.codec_rate)
            else:  # at out_rate, after resampling (the filter history still holds the old sound)
                self._lost = 0
                self._flip = False
                self._fade_out_rate = True
        self._last = pcm
        self._last_at_out = False
        if len(pcm):
            self._frame_samples = len(pcm) * self.out_rate // self.codec_rate
        return pcm

    def _conceal_native(self, samples: int, next_payload: bytes | None) -> np.ndarray:
        """``samples`` (at out_rate) of concealment, at codec_rate (or out_rate: ``_at_out``)."""
        self.stats.concealed += 1
        n_codec = samples * self.codec_rate // self.out_rate
        if self._opus is not None:
            self._opus_wake()
            n_codec -= n_codec % (self.codec_rate // 400)  # libopus wants multiples of 2.5 ms
            n_codec = max(self.codec_rate // 400, min(n_codec, self._omax))
            fec = 1 if next_payload else 0
            data = next_payload if next_payload else None
            n = self._lib.opus_decode(self._opus, data, len(next_payload) if next_payload else 0,
                                      self._optr, n_codec, fec)
            if n < 0 and fec:  # unusable FEC data: plain PLC
                n = self._lib.opus_decode(self._opus, None, 0, self._optr, n_codec, 0)
            if n >= 0:
                pcm = self._obuf[:n].copy()
                self._lost += 1
                self._last = pcm
                self._last_at_out = False
                return pcm
        if self._resampler is None:
            return self._repeat_fade(n_codec)
        # repeat-and-fade works on the last frame as heard, at out_rate (resampling a
        # fade would smear it past its end)
        if not self._last_at_out and self._last is not None:
            if self._pending is self._last:
                self._last = self.output()
            elif self._out is not None:
                self._last = self._out
            else:
                self._last = self._resampler.resample(self._last)
            self._last_at_out = True
        self._fade_out_rate = False
        self._at_out = True
        return self._repeat_fade(samples)

    def _repeat_fade(self, samples: int) -> np.ndarray:
        k = self._lost
        self._lost += 1
        last = self._last
        if last is None or len(last) == 0 or k >= FADE_FRAMES:
            return np.zeros(samples, dtype=np.int16)
        src = last[::-1] if not self._flip else last
        self._flip = not self._flip
        if len(src) < samples:
            reps = -(-samples // len(src))
            src = np.concatenate([src if i % 2 == 0 else src[::-1] for i in range(reps)])
        g0 = 1.0 - k / FADE_FRAMES
        g1 = 1.0 - (k + 1) / FADE_FRAMES
        gain = np.linspace(g0, g1, samples, endpoint=False, dtype=np.float32)
        return (src[:samples] * gain).astype(np.int16)

    def _fade_in(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """After a concealed gap: ramp the first 5 ms in so a faded gap ends without a click."""
        self._lost = 0
        self._flip = False
        n = min(len(pcm), rate // 200)
        if n:
            pcm = pcm.copy()
            pcm[:n] = (pcm[:n] * np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)).astype(np.int16)
        return pcm


def mean_square(pcm: np.ndarray) -> float:
    """Mean square of int16 samples (int16² units; 0.0 for none)."""
    n = len(pcm)
    if not n:
        return 0.0
    x = pcm.astype(np.float32)
    return float(np.dot(x, x)) / n


def _fit(pcm: np.ndarray, samples: int) -> np.ndarray:
    if len(pcm) == samples:
        return pcm
    if len(pcm) > samples:
        return pcm[:samples]
    return np.concatenate((pcm, np.zeros(samples - len(pcm), dtype=np.int16)))


# ============================================================================ encoder

class AudioEncoder:
    """int16 mono at ``in_rate`` → one RTP payload per ``ptime_ms``.

    Opus: VOIP application, voice signal, in-band FEC on with 10 % expected loss,
    ``bitrate`` (default the catalogue's 32 kbit/s), ``complexity`` (libopus path only).
    """

    def __init__(self, codec: Codec, in_rate: int = MIX_RATE, ptime_ms: int = 20,
                 bitrate: int | None = None, *, complexity: int = OPUS_DEFAULT_COMPLEXITY) -> None:
        if codec.media != "audio" or codec.av_encoder is None:
            raise UnsupportedCodec(f"{codec.name} is not an audio codec this encoder can handle")
        self.codec = codec
        self.in_rate = in_rate
        self.ptime_ms = ptime_ms
        self.samples_per_packet_rtp = codec.clock_rate * ptime_ms // 1000
        self.samples_in = in_rate * ptime_ms // 1000
        self._resampler: Resampler | None = None
        self._opus = None
        name = codec.name.lower()
        if name in ("pcmu", "pcma"):
            self._table = ULAW_ENCODE if name == "pcmu" else ALAW_ENCODE
            self.codec_rate = 8000
            self._encode = self._encode_g711
        elif name == "opus" and opus_library() is not None:
            if ptime_ms * 10 not in (25, 50, 100, 200, 400, 600) and ptime_ms not in (80, 100, 120):
                raise ValueError(f"opus cannot make {ptime_ms} ms packets (2.5, 5, 10, 20, 40, 60 ms)")
            lib = opus_library()
            assert lib is not None
            self._lib = lib
            self.codec_rate = in_rate if in_rate in OPUS_RATES else 48000
            err = ctypes.c_int(0)
            self._opus = lib.opus_encoder_create(self.codec_rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(err))
            if not self._opus or err.value != 0:
                raise RuntimeError(f"opus_encoder_create failed: {_opus_error(lib, err.value)}")
            c_int = ctypes.c_int
            for ctl, val in ((OPUS_SET_BITRATE, bitrate or codec.bitrate_kbps * 1000),
                             (OPUS_SET_INBAND_FEC, 1), (OPUS_SET_PACKET_LOSS_PERC, 10),
                             (OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE), (OPUS_SET_COMPLEXITY, complexity)):
                rc = lib.opus_encoder_ctl(ctypes.c_void_p(self._opus), c_int(ctl), c_int(val))
                if rc != 0:
                    raise RuntimeError(f"opus_encoder_ctl({ctl}, {val}) failed: {_opus_error(lib, rc)}")
            self._frame_codec = self.codec_rate * ptime_ms // 1000
            self._ibuf = np.zeros(self._frame_codec, dtype=np.int16)
            self._iptr = self._ibuf.ctypes.data
            self._pbuf = ctypes.create_string_buffer(1500)
            self._pptr = ctypes.addressof(self._pbuf)
            self._encode = self._encode_opus
        else:
            rate = codec.sample_rate if name != "opus" else 48000
            ctx = av.CodecContext.create(codec.av_encoder, "w")
            ctx.sample_rate = rate
            ctx.format = "s16"
            ctx.layout = "mono"
            ctx.time_base = fractions.Fraction(1, rate)
            if bitrate or name == "opus":
                ctx.bit_rate = bitrate or codec.bitrate_kbps * 1000
            if name == "opus":
                ctx.options = {"application": "voip", "fec": "1", "packet_loss": "10",
                               "frame_duration": str(ptime_ms)}
            ctx.open()
            self._av = ctx
            self.codec_rate = rate
            n = rate * ptime_ms // 1000
            self._frame = AudioFrame(format="s16", layout="mono", samples=n)
            self._frame.sample_rate = rate
            self._fview = np.frombuffer(self._frame.planes[0], dtype=np.int16, count=n)
            self._pts = 0
            self._encode = self._encode_av
        if self.codec_rate != in_rate:
            self._resampler = Resampler(in_rate, self.codec_rate)

    def __del__(self) -> None:
        if getattr(self, "_opus", None):
            self._lib.opus_encoder_destroy(self._opus)
            self._opus = None

    def _encode_g711(self, pcm: np.ndarray) -> bytes:
        return self._table[pcm.view(np.uint16)].tobytes()

    def _encode_opus(self, pcm: np.ndarray) -> bytes:
        self._ibuf[:] = pcm
        n = self._lib.opus_encode(self._opus, self._iptr, self._frame_codec, self._pptr, 1500)
        if n < 0:
            raise RuntimeError(f"opus_encode failed: {_opus_error(self._lib, n)}")
        return ctypes.string_at(self._pptr, n)

    def _encode_av(self, pcm: np.ndarray) -> bytes:
        self._fview[:] = pcm
        self._frame.pts = self._pts
        self._pts += len(pcm)
        packets = self._av.encode(self._frame)
        if len(packets) == 1:
            return bytes(packets[0])
        return b"".join(bytes(p) for p in packets)

    def encode(self, pcm: np.ndarray) -> bytes:
        """One RTP payload from ``ptime_ms`` of int16 mono at ``in_rate``."""
        if pcm.dtype != np.int16:
            pcm = pcm.astype(np.int16)
        if len(pcm) != self.samples_in:
            raise ValueError(f"{self.codec.name} encoder expects {self.samples_in} samples "
                             f"({self.ptime_ms} ms at {self.in_rate} Hz), got {len(pcm)}")
        if self._resampler is not None:
            pcm = self._resampler.resample(pcm)
        return self._encode(pcm)


# ============================================================================ signal helpers

def tone(freq_hz: float, ms: int, rate: int = MIX_RATE, level_dbfs: float = -12.0) -> np.ndarray:
    """A sine tone as int16 mono; ``level_dbfs`` is the RMS level relative to a full-scale sine."""
    n = rate * ms // 1000
    amp = 32767.0 * 10 ** (level_dbfs / 20.0)
    t = np.arange(n, dtype=np.float64)
    return np.rint(amp * np.sin(2 * math.pi * freq_hz * t / rate)).astype(np.int16)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, with parabolic interpolation."""
    x = np.asarray(pcm, dtype=np.float64)
    if len(x) < 4:
        return 0.0
    x = (x - x.mean()) * np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spec[1:])) + 1
    if 1 <= k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1] + 1e-12), np.log(spec[k] + 1e-12), np.log(spec[k + 1] + 1e-12)
        denom = a - 2 * b + c
        delta = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        delta = 0.0
    return (k + delta) * rate / len(x)


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level in dBFS, where a full-scale sine is 0 dBFS; silence is -inf."""
    x = np.asarray(pcm, dtype=np.float64)
    if len(x) == 0:
        return float("-inf")
    rms = math.sqrt(float(np.mean(x * x)))
    if rms == 0.0:
        return float("-inf")
    return 20 * math.log10(rms * math.sqrt(2) / 32767.0)
