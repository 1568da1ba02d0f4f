"""Audio codecs: tones survive encode → decode at the right pitch and level; loss is concealed."""
from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from av.audio.frame import AudioFrame

from gateway.catalogue import default_catalogue
from gateway.media.audio_codecs import (
    ALAW_DECODE,
    ALAW_ENCODE,
    ULAW_DECODE,
    ULAW_ENCODE,
    AudioDecoder,
    AudioEncoder,
    Resampler,
    UnsupportedCodec,
    dominant_frequency,
    level_dbfs,
    opus_library,
    tone,
)

CAT = default_catalogue()
AUDIO = ["PCMU", "PCMA", "G722", "opus"]
FRAME = 320  # 20 ms at 16 kHz


def _round_trip(name: str, signal: np.ndarray, ptime_ms: int = 20) -> tuple[np.ndarray, list[bytes]]:
    codec = CAT.get(name)
    enc, dec = AudioEncoder(codec, ptime_ms=ptime_ms), AudioDecoder(codec)
    n = 16000 * ptime_ms // 1000
    payloads = [enc.encode(signal[i:i + n]) for i in range(0, len(signal) - n + 1, n)]
    out = np.concatenate([dec.decode(p) for p in payloads])
    assert dec.stats.decoded == len(payloads) and dec.stats.errors == 0
    return out, payloads


@pytest.mark.parametrize("name", AUDIO)
@pytest.mark.parametrize("freq", [300, 1000, 3000])
def test_tone_arrives_at_its_frequency_and_level(name: str, freq: int) -> None:
    sig = tone(freq, 500, level_dbfs=-12.0)
    out, _ = _round_trip(name, sig)
    assert out.dtype == np.int16 and len(out) == len(sig)
    steady = out[len(out) // 4:]  # skip codec / filter start-up
    assert abs(dominant_frequency(steady, 16000) - freq) <= 20
    assert abs(level_dbfs(steady) - (-12.0)) <= 3.0


@pytest.mark.parametrize("name,payload_bytes,rtp_step", [
    ("PCMU", 160, 160), ("PCMA", 160, 160), ("G722", 160, 160),
])
def test_payload_size_and_rtp_timestamp_step(name: str, payload_bytes: int, rtp_step: int) -> None:
    enc = AudioEncoder(CAT.get(name))
    assert len(enc.encode(tone(1000, 20))) == payload_bytes
    # G.722 samples at 16 kHz but its RTP clock is 8000: 160 per 20 ms, not 320
    assert enc.samples_per_packet_rtp == rtp_step


def test_opus_packet_and_rtp_step() -> None:
    enc = AudioEncoder(CAT.get("opus"))
    assert enc.samples_per_packet_rtp == 960
    p = enc.encode(tone(1000, 20))
    assert 10 < len(p) < 200
    toc = p[0]
    # RFC 6716 §3.1 TOC: config 9 = SILK wideband 20 ms or 23 = CELT wideband 20 ms; mono; one frame
    assert toc >> 3 in (9, 23) and toc & 0x04 == 0 and toc & 0x03 == 0


@pytest.mark.parametrize("name", ["PCMU", "G722", "opus"])
def test_other_ptimes(name: str) -> None:
    ptime = 40 if name == "opus" else 30
    sig = tone(1000, 480)
    out, payloads = _round_trip(name, sig, ptime_ms=ptime)
    assert len(out) == len(payloads) * 16 * ptime
    assert abs(dominant_frequency(out[len(out) // 4:], 16000) - 1000) <= 20
    assert AudioEncoder(CAT.get(name), ptime_ms=ptime).samples_per_packet_rtp == \
        CAT.get(name).clock_rate * ptime // 1000


def test_wrong_frame_length_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="expects 320 samples"):
        AudioEncoder(CAT.get("PCMU")).encode(np.zeros(100, np.int16))
    with pytest.raises(UnsupportedCodec):
        AudioDecoder(CAT.get("telephone-event"))
    with pytest.raises(UnsupportedCodec):
        AudioEncoder(CAT.get("H264"))


def _pyav(name: str, mode: str) -> av.CodecContext:
    ctx = av.CodecContext.create(name, mode)
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    if mode == "w":
        ctx.format = "s16"
        ctx.time_base = fractions.Fraction(1, 8000)
    ctx.open()
    return ctx


@pytest.mark.parametrize("av_name,enc_table,dec_table", [
    ("pcm_mulaw", ULAW_ENCODE, ULAW_DECODE), ("pcm_alaw", ALAW_ENCODE, ALAW_DECODE)])
def test_g711_tables_bit_exact_with_ffmpeg(av_name: str, enc_table: np.ndarray, dec_table: np.ndarray) -> None:
    every = np.arange(65536, dtype=np.uint16).view(np.int16)
    frame = AudioFrame.from_ndarray(every.reshape(1, -1).copy(), format="s16", layout="mono")
    frame.sample_rate = 8000
    ref = np.frombuffer(b"".join(bytes(p) for p in _pyav(av_name, "w").encode(frame)), np.uint8)
    np.testing.assert_array_equal(enc_table[every.view(np.uint16)], ref)
    codes = bytes(range(256))
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in _pyav(av_name, "r").decode(av.Packet(codes))])
    np.testing.assert_array_equal(dec_table, decoded)


@pytest.mark.parametrize("name", AUDIO)
def test_corrupt_payload_never_raises(name: str) -> None:
    codec = CAT.get(name)
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    dec.decode(enc.encode(tone(1000, 20)))
    bad = [b""] + ([b"\xff\xff\xff", b"\x0b"] if name == "opus" else [])
    for p in bad:
        out = dec.decode(p)
        assert out.dtype == np.int16 and len(out) == FRAME
    assert dec.stats.errors == len(bad)
    assert dec.stats.concealed == len(bad)


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722"])
def test_repeat_and_fade_has_no_click_and_fades_out(name: str) -> None:
    codec = CAT.get(name)
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    sig = tone(440, 200, level_dbfs=-6.0)
    last = None
    for i in range(0, len(sig), FRAME):
        last = dec.decode(enc.encode(sig[i:i + FRAME]))
    assert last is not None
    lost = [dec.conceal(FRAME) for _ in range(4)]
    levels = [level_dbfs(x) for x in lost]
    assert levels[0] > -12 and levels[0] > levels[1] > levels[2]
    assert levels[3] == float("-inf")  # silent after three frames
    # continuity: no jump bigger than the signal's own sample-to-sample steps
    seq = np.concatenate([last] + lost).astype(np.int32)
    max_step = np.abs(np.diff(last.astype(np.int32))).max()
    assert np.abs(np.diff(seq)).max() <= max_step * 1.1 + 2
    assert dec.stats.concealed == 4
    # audio resumes with a short fade-in, not a jump from silence to full scale
    back = dec.decode(enc.encode(sig[:FRAME]))
    assert abs(int(back[0])) < 200
    assert dominant_frequency(back, 16000) == pytest.approx(440, abs=60)


@pytest.mark.skipif(opus_library() is None, reason="libopus not loadable")
def test_opus_fec_recovers_the_lost_frame() -> None:
    codec = CAT.get("opus")
    enc = AudioEncoder(codec)
    # the pitch changes exactly at the lost frame: plain PLC can only continue the old
    # 600 Hz, in-band FEC (carried in the next packet) knows the lost frame was 1500 Hz
    sig = np.concatenate([tone(600, 400), tone(1500, 200)])
    payloads = [enc.encode(sig[i:i + FRAME]) for i in range(0, len(sig), FRAME)]
    ref = AudioDecoder(codec)
    reference = [ref.decode(p) for p in payloads]
    lost = 20

    def run(next_payload: bytes | None) -> tuple[np.ndarray, AudioDecoder]:
        dec = AudioDecoder(codec)
        for p in payloads[:lost]:
            dec.decode(p)
        return dec.conceal(FRAME, next_payload=next_payload), dec

    recovered, dec = run(payloads[lost + 1])
    assert len(recovered) == FRAME
    assert level_dbfs(recovered) > -18.0  # not silent
    assert abs(level_dbfs(recovered) - level_dbfs(reference[lost])) < 4.0
    assert abs(dominant_frequency(recovered, 16000) - 1500) <= 20
    corr = np.corrcoef(recovered.astype(float), reference[lost].astype(float))[0, 1]
    assert corr > 0.8  # FEC reproduces the waveform, not just its spectrum
    after = dec.decode(payloads[lost + 1])
    assert len(after) == FRAME and dec.stats.concealed == 1 and dec.stats.decoded == lost + 1
    plc, _ = run(None)
    assert abs(dominant_frequency(plc, 16000) - 600) <= 30  # what we would get without FEC


@pytest.mark.skipif(opus_library() is None, reason="libopus not loadable")
def test_opus_plc_without_next_payload() -> None:
    codec = CAT.get("opus")
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    sig = tone(600, 400)
    for i in range(0, len(sig), FRAME):
        dec.decode(enc.encode(sig[i:i + FRAME]))
    plc = dec.conceal(FRAME)
    assert len(plc) == FRAME and level_dbfs(plc) > -30.0
    assert abs(dominant_frequency(plc, 16000) - 600) <= 30


@pytest.mark.parametrize("rate_in,rate_out", [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000),
                                              (44100, 16000)])
def test_resampler_keeps_tone_and_is_seamless(rate_in: int, rate_out: int) -> None:
    sig = tone(1000, 400, rate=rate_in)
    chunked_r, whole_r = Resampler(rate_in, rate_out), Resampler(rate_in, rate_out)
    step = rate_in // 50
    chunked = np.concatenate([chunked_r.resample(sig[i:i + step]) for i in range(0, len(sig), step)])
    assert abs(len(chunked) - len(sig) * rate_out / rate_in) <= rate_out // 100
    steady = chunked[len(chunked) // 4:]
    assert abs(dominant_frequency(steady, rate_out) - 1000) <= 5
    assert abs(level_dbfs(steady) - level_dbfs(sig)) < 0.5
    if rate_in % rate_out == 0 or rate_out % rate_in == 0:  # numpy path: chunking changes nothing
        np.testing.assert_array_equal(chunked, whole_r.resample(sig))


def test_signal_helpers() -> None:
    t = tone(1000, 100, level_dbfs=-6.0)
    assert len(t) == 1600 and t.dtype == np.int16
    assert level_dbfs(t) == pytest.approx(-6.0, abs=0.05)
    assert dominant_frequency(t, 16000) == pytest.approx(1000, abs=1)
    assert level_dbfs(np.zeros(10, np.int16)) == float("-inf")


def test_opus_without_libopus_falls_back_to_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.media.audio_codecs as ac

    monkeypatch.setattr(ac, "opus_library", lambda: None)
    codec = CAT.get("opus")
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    assert enc.samples_per_packet_rtp == 960 and dec.codec_rate == 48000
    sig = tone(1000, 400)
    out = np.concatenate([dec.decode(enc.encode(sig[i:i + FRAME])) for i in range(0, len(sig), FRAME)])
    assert len(out) == len(sig)
    assert abs(dominant_frequency(out[len(out) // 4:], 16000) - 1000) <= 20
    assert len(dec.conceal(FRAME)) == FRAME


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722", "opus"])
def test_level_first_decoding_gives_the_same_audio_when_heard(name: str) -> None:
    """decode_level + output() only for some frames == decode() of every frame (seamless resampling)."""
    codec = CAT.get(name)
    enc = AudioEncoder(codec)
    sig = np.concatenate([tone(440, 200, level_dbfs=-6.0), np.zeros(3200, dtype=np.int16), tone(900, 200)])
    payloads = [enc.encode(sig[i:i + FRAME]) for i in range(0, len(sig), FRAME)]
    eager, lazy = AudioDecoder(codec), AudioDecoder(codec)
    for k, p in enumerate(payloads):
        ref = eager.decode(p)
        level = lazy.decode_level(p)
        if k % 10 not in (0, 1):  # away from the signal's edges (filter delays differ by rate)
            assert level == pytest.approx(float(np.mean(ref.astype(np.float64) ** 2)), rel=0.1, abs=50.0)
        if k % 3 == 2:  # heard only now and then
            out = lazy.output()
            if name != "opus":  # opus: silent packets are not decoded (see next test)
                assert np.array_equal(out, ref)


def test_repeated_payloads_are_not_decoded_again() -> None:
    codec = CAT.get("G722")
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    silence = enc.encode(np.zeros(FRAME, dtype=np.int16))
    for _ in range(20):
        silence = enc.encode(np.zeros(FRAME, dtype=np.int16))
    outs = [dec.decode(silence) for _ in range(30)]
    assert dec.stats.repeats > 10 and dec.stats.decoded == 30
    assert all(np.array_equal(o, outs[-1]) for o in outs[-5:])
    sig = tone(700, 200)
    heard = np.concatenate([dec.decode(enc.encode(sig[i:i + FRAME])) for i in range(0, len(sig), FRAME)])
    assert dominant_frequency(heard[FRAME:], 16000) == pytest.approx(700, abs=20)


@pytest.mark.skipif(opus_library() is None, reason="libopus not loadable")
def test_opus_silence_packets_are_skipped_and_speech_after_them_is_clean() -> None:
    import av as _av

    codec = CAT.get("opus")
    ctx = _av.CodecContext.create("libopus", "w")  # as a browser/endpoint without DTX would encode
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = 48000, "mono", "s16", 24000
    ctx.open()

    def encode48(pcm16k: np.ndarray) -> bytes:
        f = _av.AudioFrame.from_ndarray(np.repeat(pcm16k, 3).reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000
        return b"".join(bytes(p) for p in ctx.encode(f))

    dec = AudioDecoder(codec)
    sig = tone(600, 300)
    for i in range(0, len(sig), FRAME):
        dec.decode_level(encode48(sig[i:i + FRAME]))
    quiet = [dec.decode_level(encode48(np.zeros(FRAME, dtype=np.int16))) for _ in range(20)]
    assert quiet[-1] == 0.0 and dec._asleep  # no decoding once silence has settled
    sig = tone(1000, 400)
    heard = []
    for i in range(0, len(sig), FRAME):
        dec.decode_level(encode48(sig[i:i + FRAME]))
        heard.append(dec.output())
    heard_pcm = np.concatenate(heard[4:])
    assert dominant_frequency(heard_pcm, 16000) == pytest.approx(1000, abs=20)
    assert level_dbfs(heard_pcm) > -20
