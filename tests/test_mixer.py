"""The audio mixer, heard through an L16 (RFC 3551, big-endian linear) "codec".

L16 is lossless, so what each member receives can be decoded and checked
exactly: which tones are in it, how loud, whether it is the shared payload.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from gateway.media.mixer import AudioMixer

RATE = 16000
F = 320


class L16Encoder:
    samples_per_packet_rtp = F  # 20 ms at a 16 kHz RTP clock

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def encode(self, pcm: np.ndarray) -> bytes:
        self.counter[0] += 1
        return pcm.astype(">i2").tobytes()


def l16_decode(payload: bytes) -> np.ndarray:
    return np.frombuffer(payload, dtype=">i2").astype(np.int16)


class Sink:
    def __init__(self, counter: list[int], key: str = "L16/16000") -> None:
        self.encoder_key = key
        self.counter = counter
        self.packets: list[tuple[bytes, int]] = []

    def make_encoder(self) -> L16Encoder:
        return L16Encoder(self.counter)

    def deliver(self, payload: bytes, timestamp_step: int) -> None:
        self.packets.append((payload, timestamp_step))

    def audio(self, last: int) -> np.ndarray:
        return np.concatenate([l16_decode(p) for p, _ in self.packets[-last:]])


class Tone:
    """A continuous sine; ``on`` False sends nothing (like DTX)."""

    def __init__(self, hz: float, amp: float = 6000.0) -> None:
        self.hz, self.amp, self.n, self.on = hz, amp, 0, True

    def pull(self) -> np.ndarray | None:
        t = (self.n + np.arange(F)) / RATE
        self.n += F
        if not self.on:
            return None
        return np.round(self.amp * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)


class Silent:
    def pull(self) -> None:
        return None


def magnitude(x: np.ndarray, hz: float) -> float:
    """Amplitude of the ``hz`` component of ``x`` (sample amplitude units)."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) * 2 / len(x)
    return float(spec[int(round(hz * len(x) / RATE))])


def room(sources: dict[str, object], keys: dict[str, str] | None = None, **kw):
    counter = [0]
    mx = AudioMixer(**kw)
    sinks = {}
    for mid, src in sources.items():
        sinks[mid] = Sink(counter, (keys or {}).get(mid, "L16/16000"))
        mx.add(mid, src, sinks[mid])
    return mx, sinks, counter


def run(mx: AudioMixer, ticks: int) -> None:
    for _ in range(ticks):
        mx.tick()


def test_each_member_hears_the_others_but_not_itself():
    tones = {"a": Tone(400), "b": Tone(700), "c": Tone(1000)}
    mx, sinks, _ = room(tones)
    run(mx, 30)
    assert sorted(mx.speakers) == ["a", "b", "c"]
    for mid, tone in tones.items():
        heard = sinks[mid].audio(10)
        own = magnitude(heard, tone.hz)
        others = [magnitude(heard, t.hz) for k, t in tones.items() if k != mid]
        assert own < 1.0, f"{mid} hears itself ({own:.1f})"
        for o in others:
            assert o == pytest.approx(6000, rel=0.02)
        # one packet per tick, 20 ms of RTP clock each
        assert len(sinks[mid].packets) == 30
        assert {step for _, step in sinks[mid].packets} == {F}


def test_non_speakers_share_one_encode_and_the_same_payload():
    srcs = {f"m{i}": (Tone(300 + 200 * i) if i < 3 else Silent()) for i in range(10)}
    mx, sinks, counter = room(srcs)
    run(mx, 10)
    counter[0] = 0
    mx.tick()
    assert counter[0] == 1 + 3  # one shared encode (one key) + one per speaker
    assert mx.stats.encodes_per_tick == 4
    assert mx.stats.shared_groups == 1
    payloads = [sinks[f"m{i}"].packets[-1][0] for i in range(3, 10)]
    assert all(p is payloads[0] for p in payloads), "non-speakers must get the very same encoded payload"
    heard = l16_decode(payloads[0])
    assert np.abs(heard).max() > 1000  # it is the mix, not silence
    # speakers each get their own (different) mix-minus
    assert len({sinks[f"m{i}"].packets[-1][0] for i in range(3)}) == 3


def test_two_encoder_keys_make_two_shared_encodes():
    srcs = {f"m{i}": (Tone(300 + 200 * i) if i < 3 else Silent()) for i in range(10)}
    keys = {f"m{i}": ("PCMU" if i % 2 else "G722") for i in range(10)}
    mx, sinks, counter = room(srcs, keys)
    run(mx, 10)
    counter[0] = 0
    mx.tick()
    assert counter[0] == 2 + 3
    assert mx.stats.shared_groups == 2
    g722 = [sinks[f"m{i}"].packets[-1][0] for i in (4, 6, 8)]
    pcmu = [sinks[f"m{i}"].packets[-1][0] for i in (3, 5, 7, 9)]
    assert all(p is g722[0] for p in g722) and all(p is pcmu[0] for p in pcmu)
    assert g722[0] is not pcmu[0] and g722[0] == pcmu[0]  # same mix, separate encoders


def test_nobody_speaking_everyone_still_gets_encoded_silence():
    mx, sinks, counter = room({f"m{i}": Silent() for i in range(5)})
    run(mx, 5)
    assert counter[0] == 5  # one shared encode per tick
    for s in sinks.values():
        assert len(s.packets) == 5
        assert not s.audio(5).any()


def test_fourth_speaker_is_not_mixed_when_max_speakers_is_3():
    tones = {"a": Tone(400), "b": Tone(700), "c": Tone(1000), "d": Tone(1300)}
    tones["d"].on = False
    tones["listener"] = Silent()
    mx, sinks, _ = room(tones, max_speakers=3)
    run(mx, 10)
    tones["d"].on = True
    run(mx, 30)
    assert mx.members["d"].speaking  # it talks, but three are already mixed
    assert sorted(mx.speakers) == ["a", "b", "c"]
    heard = sinks["listener"].audio(10)
    assert magnitude(heard, 1300) < 1.0
    for hz in (400, 700, 1000):
        assert magnitude(heard, hz) > 5000
    # the unmixed talker hears the full mix of the three
    assert magnitude(sinks["d"].audio(10), 400) > 5000


def test_a_much_louder_newcomer_takes_a_speaker_slot():
    tones = {"a": Tone(400, 2000), "b": Tone(700, 3000), "c": Tone(1000, 4000), "d": Tone(1300, 12000)}
    tones["d"].on = False
    mx, sinks, _ = room(tones, max_speakers=3)
    run(mx, 10)
    tones["d"].on = True
    run(mx, 20)
    assert sorted(mx.speakers) == ["b", "c", "d"]  # the quietest one gave way


def test_hysteresis_pause_keeps_speaking_long_silence_ends_it():
    events: list[tuple[str, bool]] = []
    talker = Tone(500)
    mx, _, _ = room({"t": talker, "l": Silent()}, on_speaking=lambda m, on: events.append((m, on)))
    run(mx, 10)
    assert events == [("t", True)]
    talker.on = False
    run(mx, 5)  # 100 ms pause between words
    assert mx.members["t"].speaking and mx.speakers == ["t"]
    talker.on = True
    run(mx, 10)
    assert events == [("t", True)], "a short pause must not flap the speaking state"
    talker.on = False
    run(mx, 50)  # 1 s of silence
    assert not mx.members["t"].speaking and mx.speakers == []
    assert events == [("t", True), ("t", False)]


def test_a_single_click_does_not_start_speaking():
    events: list[tuple[str, bool]] = []
    talker = Tone(500)
    talker.on = False
    mx, _, _ = room({"t": talker}, on_speaking=lambda m, on: events.append((m, on)))
    run(mx, 3)
    talker.on = True
    run(mx, 1)  # one 20 ms burst
    talker.on = False
    run(mx, 10)
    assert events == []


def test_mute_in_removes_member_from_what_others_hear():
    tones = {"a": Tone(400), "b": Tone(700), "c": Silent()}
    mx, sinks, _ = room(tones)
    run(mx, 10)
    mx.set_mute("a", mute_in=True)
    run(mx, 10)
    heard = sinks["c"].audio(10)
    assert magnitude(heard, 400) < 1.0
    assert magnitude(heard, 700) > 5000
    assert mx.speakers == ["b"] and not mx.members["a"].speaking
    mx.set_mute("a", mute_in=False)
    run(mx, 10)
    assert magnitude(sinks["c"].audio(5), 400) > 5000


def test_mute_out_member_receives_silence_but_keeps_receiving_packets():
    tones = {"a": Tone(400), "b": Tone(700), "c": Silent(), "d": Silent()}
    mx, sinks, counter = room(tones)
    run(mx, 10)
    mx.set_mute("c", mute_out=True)
    mx.set_mute("a", mute_out=True)  # a muted-out speaker: still heard, hears nothing
    before = {k: len(s.packets) for k, s in sinks.items()}
    counter[0] = 0
    run(mx, 10)
    assert all(len(s.packets) - before[k] == 10 for k, s in sinks.items())
    assert not sinks["c"].audio(10).any()
    assert not sinks["a"].audio(10).any()
    assert magnitude(sinks["d"].audio(10), 400) > 5000  # others still hear a
    # per tick: shared mix (d) + shared silence (a, c) + b's own mix-minus
    assert counter[0] == 10 * 3


def test_gain_plus_6_db_doubles_the_level():
    tones = {"a": Tone(400, 3000), "l": Silent()}
    mx, sinks, _ = room(tones)
    run(mx, 20)
    base = magnitude(sinks["l"].audio(10), 400)
    assert base == pytest.approx(3000, rel=0.01)
    mx.set_gain("a", 6.0)
    run(mx, 10)
    louder = magnitude(sinks["l"].audio(10), 400)
    assert louder / base == pytest.approx(10 ** (6 / 20), rel=0.01)


def test_two_full_scale_talkers_do_not_wrap_around():
    a, b = Tone(400, 32767), Tone(400, 32767)  # in phase: the sum is twice full scale
    mx, sinks, _ = room({"a": a, "b": b, "l": Silent()})
    run(mx, 20)
    heard = sinks["l"].audio(15).astype(np.int32)
    ref = np.round(32767 * np.sin(2 * np.pi * 400 * np.arange(a.n - 15 * F, a.n) / RATE))
    assert heard.max() <= 32767 and heard.min() >= -32768
    loud = np.abs(ref) > 3000
    assert np.all(np.sign(heard[loud]) == np.sign(ref[loud])), "the mix wrapped around (sign flip)"
    assert magnitude(heard, 400) > 25000  # still loud, just limited


def test_dominant_speaker_with_hysteresis():
    dom: list[str | None] = []
    a, b = Tone(400, 8000), Tone(700, 2000)
    mx, _, _ = room({"a": a, "b": b}, on_dominant=dom.append)
    run(mx, 10)
    assert dom == ["a"]
    b.amp = 16000
    run(mx, 5)  # 100 ms louder: not enough to switch
    b.amp = 2000
    run(mx, 10)
    assert dom == ["a"]
    b.amp = 16000
    run(mx, 40)
    assert dom == ["a", "b"] and mx.dominant == "b"


def test_bad_sources_and_sinks_do_not_stop_the_mix(caplog):
    class Broken:
        def pull(self):
            raise RuntimeError("decoder exploded")

    class WrongShape:
        def pull(self):
            return np.zeros(160, dtype=np.int16)

    class Floats:
        def pull(self):
            return np.zeros(F, dtype=np.float64)

    class BadSink(Sink):
        def deliver(self, payload, step):
            raise OSError("socket closed")

    counter = [0]
    mx = AudioMixer()
    srcs = {"t": Tone(400), "x": Broken(), "y": WrongShape(), "z": Floats(), "w": Tone(900)}
    sinks = {k: Sink(counter) for k in srcs}
    sinks["bad"] = BadSink(counter)
    for k, s in srcs.items():
        mx.add(k, s, sinks[k])
    mx.add("bad", Silent(), sinks["bad"])
    with caplog.at_level(logging.WARNING):
        run(mx, 20)
    assert sorted(mx.speakers) == ["t", "w"]
    assert magnitude(sinks["y"].audio(10), 400) > 5000
    assert magnitude(sinks["t"].audio(10), 900) > 5000
    text = caplog.text
    assert "decoder exploded" in text and "160 samples" in text and "float64" in text
    assert text.count("RuntimeError: decoder exploded") == 1  # logged once, not 50 times a second


def test_remove_and_member_errors():
    events = []
    t = Tone(400)
    mx, sinks, _ = room({"t": t, "l": Silent()}, on_speaking=lambda m, on: events.append((m, on)))
    run(mx, 10)
    mx.remove("t")
    mx.remove("t")  # idempotent
    assert events == [("t", True), ("t", False)]
    n = len(sinks["t"].packets)
    run(mx, 5)
    assert len(sinks["t"].packets) == n
    assert not sinks["l"].audio(3).any()
    with pytest.raises(KeyError, match="no mixer member 'nobody'"):
        mx.set_mute("nobody", mute_in=True)
    with pytest.raises(ValueError, match="already in the mix"):
        mx.add("l", Silent(), sinks["l"])


def test_many_members_remove_from_the_middle_keeps_everyone_right():
    srcs = {f"m{i}": Silent() for i in range(40)}
    srcs["m7"] = Tone(400)
    mx, sinks, _ = room(srcs)
    run(mx, 5)
    for i in range(0, 40, 3):
        if i != 7:
            mx.remove(f"m{i}")
    run(mx, 10)
    assert mx.speakers == ["m7"]
    assert magnitude(sinks["m8"].audio(10), 400) > 5000
    assert magnitude(sinks["m7"].audio(10), 400) < 1.0
    assert mx.stats.ticks == 15 and mx.stats.tick_time_us_p50 > 0


def test_level_sources_are_asked_for_frames_only_when_selected():
    class Lazy:
        def __init__(self, hz: float, amp: float) -> None:
            self.tone, self.frames_made = Tone(hz, amp), 0
            self._f: np.ndarray | None = None

        def pull(self):  # never used by the mixer when pull_level exists
            raise AssertionError("pull() called")

        def pull_level(self):
            self._f = self.tone.pull()
            x = self._f.astype(np.float64)
            return float(np.mean(x * x))

        def frame(self):
            self.frames_made += 1
            return self._f

    counter = [0]
    mx = AudioMixer(max_speakers=2)
    srcs = {"a": Lazy(500, 8000), "b": Lazy(900, 6000), "c": Lazy(1300, 300), "q": Lazy(200, 0)}
    sinks = {k: Sink(counter) for k in srcs}
    for k in srcs:
        mx.add(k, srcs[k], sinks[k])
    for _ in range(20):
        mx.tick()
    assert sorted(mx.speakers) == ["a", "b"]
    assert srcs["c"].frames_made == 0 and srcs["q"].frames_made == 0
    assert srcs["a"].frames_made >= 15
    heard = sinks["q"].audio(5)
    assert magnitude(heard, 500) > 6000 and magnitude(heard, 900) > 4000 and magnitude(heard, 1300) < 50


@pytest.mark.parametrize("codec_name", ["PCMU", "G722", "opus"])
def test_starting_and_stopping_to_talk_makes_no_click_in_what_you_hear(codec_name):
    # B hears A's steady tone from the shared encoder; when B starts talking it gets its
    # own mix-minus from its own encoder, and back again when it stops. The far end
    # decodes one continuous stream: the switch must not click (a cold encoder's
    # resampler or ADPCM state would: -5 to -15 dB of error in the first packets).
    from gateway.catalogue import default_catalogue
    from gateway.media.audio_codecs import AudioDecoder, AudioEncoder

    codec = default_catalogue().get(codec_name)

    class CodecSink(Sink):
        def __init__(self) -> None:
            super().__init__([0], codec_name)
            self.decoder = AudioDecoder(codec, out_rate=RATE)  # the far end: one decoder throughout
            self.heard: list[np.ndarray] = []

        def make_encoder(self):
            return AudioEncoder(codec, in_rate=RATE)

        def deliver(self, payload: bytes, timestamp_step: int) -> None:
            self.heard.append(self.decoder.decode(payload))

    a, b = Tone(1000.0, amp=4000.0), Tone(300.0, amp=4000.0)
    b.on = False
    mx = AudioMixer()
    sinks = {"a": CodecSink(), "b": CodecSink()}
    mx.add("a", a, sinks["a"])
    mx.add("b", b, sinks["b"])
    run(mx, 60)
    b.on = True  # B starts talking: own encoder from here...
    run(mx, 60)
    assert "b" in mx.speakers
    b.on = False  # ...and stops: back to the shared one after the hangover
    run(mx, 60)
    assert mx.speakers == ["a"]
    heard = sinks["b"].heard
    t = np.arange(F) / RATE
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)
    worst = -200.0
    for k in range(20, len(heard)):  # (after the codecs' start-up)
        x = heard[k].astype(np.float64)
        res = x - basis @ np.linalg.lstsq(basis, x, rcond=None)[0]
        worst = max(worst, 10 * np.log10(np.mean(res ** 2) / np.mean(x ** 2)))
    assert worst < -20, f"{codec_name}: a 20 ms block of what B heard is {worst:.1f} dB off A's tone (a click)"


class Noise:
    """Steady white noise at ``dbfs`` (a room's fan or hum, as a microphone hears it)."""

    def __init__(self, dbfs: float, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.rms = 32768.0 * 10 ** (dbfs / 20)

    def pull(self) -> np.ndarray:
        return np.clip(self.rng.normal(0.0, self.rms, F), -32768, 32767).astype(np.int16)


def test_a_noisy_room_stops_counting_as_speech_and_is_not_mixed_into_everyones_audio():
    # a commune site whose microphone hears a fan at -32 dBFS (above the -42 dBFS
    # threshold); one real talker at -20 dBFS; a listener
    mx, sinks, _ = room({"fan": Noise(-32.0), "talker": Tone(440.0, amp=3277.0), "listener": Silent()})
    run(mx, 200)  # 4 s
    assert mx.speakers == ["talker"]
    assert not mx.members["fan"].speaking
    heard = sinks["listener"].audio(50).astype(np.float64)
    # what the listener hears is the talker's tone, not the fan: compare the energy
    # outside 440 Hz with what the fan would add if it were mixed (-32 dBFS)
    spec = np.abs(np.fft.rfft(heard)) ** 2
    k = int(round(440.0 * len(heard) / RATE))
    noise_power = (spec.sum() - spec[k - 2:k + 3].sum()) * 2 / len(heard) ** 2
    assert 10 * np.log10(noise_power / 32768.0 ** 2 + 1e-20) < -50, "the fan is in the mix"
    assert magnitude(heard, 440.0) > 3000


def test_loud_steady_programme_audio_stays_in_the_mix():
    # a site playing a recording at -20 dBFS for a whole minute is still heard at its end
    mx, sinks, _ = room({"programme": Tone(300.0, amp=3277.0), "listener": Silent()})
    run(mx, 3000)
    assert mx.speakers == ["programme"]
    assert magnitude(sinks["listener"].audio(5), 300.0) > 3000


def test_a_quiet_talker_in_a_quiet_room_is_heard():
    # -36 dBFS speech (far from the microphone) over a -60 dBFS room: 0.3 s on, 0.2 s off
    class Bursts(Tone):
        def pull(self):
            on = (self.n // F) % 25 < 15
            f = super().pull()
            return f if on else np.zeros(F, dtype=np.int16)

    quiet = Bursts(500.0, amp=32768.0 * 10 ** (-33 / 20))  # sine peak -33 dBFS = -36 dBFS mean square
    mx, sinks, _ = room({"far": quiet, "room": Noise(-60.0), "listener": Silent()})
    mixed = 0
    for _ in range(500):  # 10 s
        mx.tick()
        mixed += "far" in mx.speakers
    assert mixed > 0.5 * 500  # mixed while talking (0.3 s of every 0.5 s, plus the hangover)
    assert magnitude(sinks["listener"].audio(500), 500.0) > 100
