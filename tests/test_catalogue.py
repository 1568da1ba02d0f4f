"""The codec catalogue: shipped facts, lookups, and file:line errors for bad YAML."""
from __future__ import annotations

import textwrap
from pathlib import Path

import av
import pytest

from gateway.catalogue import Catalogue, CatalogueError, Codec, default_catalogue, load_catalogue

EXPECTED_NAMES = {"PCMU", "PCMA", "G722", "opus", "telephone-event", "H263", "H263-1998", "H264", "VP8", "H261"}


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return default_catalogue()


def test_shipped_catalogue_has_every_codec(cat: Catalogue) -> None:
    assert cat.names() == EXPECTED_NAMES
    assert len(cat) == len(EXPECTED_NAMES)
    assert {c.name for c in cat.audio()} == {"PCMU", "PCMA", "G722", "opus", "telephone-event"}
    assert {c.name for c in cat.video()} == {"H263", "H263-1998", "H264", "VP8", "H261"}
    assert all(isinstance(c, Codec) for c in cat)
    assert default_catalogue() is cat  # cached


def test_g711(cat: Catalogue) -> None:
    pcmu = cat.get("PCMU")
    assert (pcmu.media, pcmu.encoding_name, pcmu.clock_rate, pcmu.sample_rate, pcmu.channels) == (
        "audio", "PCMU", 8000, 8000, 1)
    assert pcmu.static_pt == 0 and pcmu.ptime_ms == 20 and pcmu.rtpmap() == "PCMU/8000"
    assert pcmu.h245 is not None and pcmu.h245["capability"] == "audioCapability"
    assert pcmu.h245["choice"] == "g711Ulaw64k"
    assert (pcmu.av_encoder, pcmu.av_decoder, pcmu.rfc, pcmu.bitrate_kbps) == ("pcm_mulaw", "pcm_mulaw", "RFC 3551", 64)
    pcma = cat.get("pcma")  # case-insensitive
    assert pcma.static_pt == 8 and pcma.h245["choice"] == "g711Alaw64k" and pcma.av_encoder == "pcm_alaw"
    assert pcmu.source.endswith(":4") and "g711.yaml" in pcmu.source


def test_g722_clock_rate_quirk(cat: Catalogue) -> None:
    g722 = cat.get("G722")
    assert g722.clock_rate == 8000 and g722.sample_rate == 16000
    assert g722.rtpmap() == "G722/8000" and g722.static_pt == 9
    assert g722.timestamp_increment(20) == 160
    assert g722.h245["choice"] == "g722-64k"
    assert g722.quirk("g722-clock-rate") is not None
    assert "3551" in g722.quirk("g722-clock-rate").text


def test_opus_is_always_48000_2(cat: Catalogue) -> None:
    opus = cat.get("OPUS")
    assert opus.rtpmap() == "opus/48000/2"
    assert opus.clock_rate == 48000 and opus.channels == 2 and opus.static_pt is None
    assert opus.timestamp_increment(20) == 960
    assert opus.fmtp["useinbandfec"] == "1"
    assert opus.fmtp_implied["stereo"] == "0"
    assert opus.rfc == "RFC 7587" and opus.h245 is None
    assert opus.quirk("opus-rtpmap") is not None


def test_telephone_event(cat: Catalogue) -> None:
    te = cat.get("telephone-event")
    assert te.rtpmap() == "telephone-event/8000" and te.fmtp == {"events": "0-15"}
    assert te.static_pt is None and te.rfc == "RFC 4733"
    assert te.h245["capability"] == "userInputCapability"
    assert {"dtmf", "hookflash", "basicString"} <= set(te.h245["choices"])


def test_video_entries(cat: Catalogue) -> None:
    h263 = cat.get("H263")
    assert h263.static_pt == 34 and h263.rfc == "RFC 2190" and h263.clock_rate == 90000
    assert h263.h245["choice"] == "h263VideoCapability" and h263.h245["cifMPI"] == 1
    h263p = cat.get("H263-1998")
    assert h263p.static_pt is None and h263p.rfc == "RFC 4629" and h263p.av_encoder == "h263p"
    h264 = cat.get("h264")
    assert h264.fmtp["packetization-mode"] == "1" and h264.fmtp["profile-level-id"] == "42e01f"
    # RFC 6184 §8.1: absent packetization-mode means mode 0
    assert h264.fmtp_implied["packetization-mode"] == "0"
    assert h264.quirk("h264-packetization-mode-absent") is not None
    assert any(v["packetization-mode"] == "0" for v in h264.fmtp_variants)
    assert h264.h245["choice"] == "genericVideoCapability"
    assert h264.h245["capabilityIdentifier"] == "0.0.8.241.0.0.1"
    vp8 = cat.get("VP8")
    assert vp8.rtpmap() == "VP8/90000" and vp8.rfc == "RFC 7741"


def test_lookups(cat: Catalogue) -> None:
    assert cat.by_static_pt(0).name == "PCMU"
    assert cat.by_static_pt(8).name == "PCMA"
    assert cat.by_static_pt(9).name == "G722"
    assert cat.by_static_pt(34).name == "H263"
    assert cat.by_static_pt(18) is None
    assert cat.find("g722", 8000).name == "G722"
    assert cat.find("G722", 16000) is None
    assert cat.find("OPUS", 48000, 2).name == "opus"
    assert cat.find("opus", 48000, 1) is None
    assert cat.find("H263-1998", 90000).name == "H263-1998"
    assert cat.find("nope", 8000) is None
    assert "pcmu" in cat
    with pytest.raises(KeyError, match="known: .*PCMU"):
        cat.get("G729")


def test_codec_is_immutable_and_hashable(cat: Catalogue) -> None:
    c = cat.get("PCMU")
    with pytest.raises(Exception):
        c.clock_rate = 16000  # type: ignore[misc]
    with pytest.raises(TypeError):
        cat.get("opus").fmtp["x"] = "1"  # type: ignore[index]
    assert {c, cat.get("PCMU")} == {c}


def test_every_pyav_codec_exists(cat: Catalogue) -> None:
    for c in cat:
        if c.av_encoder:
            assert av.codec.Codec(c.av_encoder, "w").is_encoder, c.name
        if c.av_decoder:
            assert av.codec.Codec(c.av_decoder, "r").is_decoder, c.name
    assert cat.get("telephone-event").av_encoder is None


# ----------------------------------------------------------------- errors with FILE:LINE:COL

GOOD = """\
codecs:
  - name: PCMU
    media: audio
    encoding_name: PCMU
    clock_rate: 8000
    sample_rate: 8000
    channels: 1
    static_pt: 0
    fmtp: {}
    ptime_ms: 20
    h245: null
    av_encoder: pcm_mulaw
    av_decoder: pcm_mulaw
    rfc: RFC 3551
    bitrate_kbps: 64
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _problems(tmp_path: Path) -> list[str]:
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(tmp_path)
    assert str(exc.value).count("\n") == len(exc.value.problems)
    return exc.value.problems


def test_good_temp_catalogue(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD)
    cat = load_catalogue(tmp_path)
    assert cat.names() == {"PCMU"}
    assert cat.get("PCMU").source == f"{tmp_path / 'a.yaml'}:2"


def test_unknown_key(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD + "    clockrate: 8000\n")
    (p,) = _problems(tmp_path)
    assert p.startswith(f"{tmp_path / 'a.yaml'}:16:5: unknown key 'clockrate'")


def test_wrong_type(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD.replace("clock_rate: 8000", "clock_rate: eight thousand"))
    (p,) = _problems(tmp_path)
    assert p.startswith(f"{tmp_path / 'a.yaml'}:5:17: clock_rate: expected an integer")
    assert "'eight thousand'" in p


def test_missing_key(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD.replace("    rfc: RFC 3551\n", ""))
    (p,) = _problems(tmp_path)
    assert p.startswith(f"{tmp_path / 'a.yaml'}:2:5: codec entry is missing 'rfc'")


def test_duplicate_name_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD)
    _write(tmp_path, "b.yaml", "# second\n" + GOOD.replace("static_pt: 0", "static_pt: null"))
    (p,) = _problems(tmp_path)
    assert p.startswith(f"{tmp_path / 'b.yaml'}:3: duplicate codec name 'PCMU'")
    assert f"a.yaml:2" in p


def test_duplicate_key_and_bad_values_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("media: audio", "media: sound").replace("static_pt: 0", "static_pt: 200")
    text = text.replace("    ptime_ms: 20\n", "    ptime_ms: 20\n    ptime_ms: 30\n")
    _write(tmp_path, "a.yaml", text)
    probs = _problems(tmp_path)
    joined = "\n".join(probs)
    assert ":3:12: media: 'sound' is not one of audio, video" in joined
    assert ":8:16: static_pt: 200 is out of range" in joined
    assert ":11:5: codec: duplicate key 'ptime_ms' (first at line 10)" in joined


def test_not_yaml_and_wrong_shape(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "codecs: [\n")
    _write(tmp_path, "b.yaml", "codec:\n  - 1\n")
    _write(tmp_path, "c.yaml", "codecs:\n  - just a string\n")
    probs = _problems(tmp_path)
    assert any("a.yaml:2:1: not valid YAML" in p for p in probs)
    assert any("b.yaml:1:1: unknown top-level key 'codec'" in p for p in probs)
    assert any("c.yaml:2:5: each codec must be a mapping" in p for p in probs)


def test_bad_quirk_and_h245(tmp_path: Path) -> None:
    text = GOOD.replace("h245: null", "h245: {choice: g711Ulaw64k}") + "    quirks:\n      - id: x\n"
    _write(tmp_path, "a.yaml", text)
    joined = "\n".join(_problems(tmp_path))
    assert ":11:11: h245: missing 'capability'" in joined
    assert ":17:9: quirk: needs both 'id' and 'text'" in joined


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="no such directory"):
        load_catalogue(tmp_path / "nope")
    with pytest.raises(CatalogueError, match="no \\*.yaml codec files"):
        load_catalogue(tmp_path)
