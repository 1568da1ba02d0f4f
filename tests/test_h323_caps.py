"""H.245 TerminalCapabilitySet from the codec catalogue, and far-end capability sets read back."""
from __future__ import annotations

import pytest

from gateway.catalogue import default_catalogue
from gateway.media.codecs.audio import AudioParams
from gateway.media.codecs.h261 import H261Params
from gateway.media.codecs.h263 import H263Params
from gateway.h323 import asn1, q931
from gateway.h323.capabilities import (
    RemoteCapability,
    parse_capabilities,
    simultaneous_capabilities,
    tcs_message,
    terminal_capability_set,
)
from tests.test_h323_q931 import tshark_frames

CAT = default_catalogue()
CALL = bytes(range(16, 32))


def _wire(tcs: dict) -> dict:
    """Encode as an H.245 request and decode it back (what the far end would see)."""
    msg = asn1.decode_h245(asn1.encode_h245(tcs_message(tcs)))
    assert msg[0] == "request" and msg[1][0] == "terminalCapabilitySet"
    return msg[1][1]


def test_default_set_from_catalogue() -> None:
    tcs = _wire(terminal_capability_set(CAT, seq=3))
    assert tcs["sequenceNumber"] == 3 and asn1.h245_version(tcs["protocolIdentifier"]) == 7
    table = {e["capabilityTableEntryNumber"]: e["capability"] for e in tcs["capabilityTable"]}
    assert table[1] == ("receiveAudioCapability", ("g722-64k", 20))      # 20 ms per packet
    assert table[2] == ("receiveAudioCapability", ("g711Ulaw64k", 20))
    assert table[3] == ("receiveAudioCapability", ("g711Alaw64k", 20))
    kind, (choice, h264) = table[4]
    assert (kind, choice) == ("receiveVideoCapability", "genericVideoCapability")
    assert h264["capabilityIdentifier"] == ("standard", (0, 0, 8, 241, 0, 0, 1))
    assert h264["maxBitRate"] == 10240                                   # 1024 kbit/s in 100 bit/s units
    assert h264["collapsing"] == [
        {"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 64)},   # Baseline
        {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", 71)},    # level 3.1
    ]
    kind, (choice, h263) = table[5]
    assert choice == "h263VideoCapability"
    assert (h263["sqcifMPI"], h263["qcifMPI"], h263["cifMPI"], h263["maxBitRate"]) == (1, 1, 1, 3840)
    assert "cif4MPI" not in h263 and h263["advancedPrediction"] is False
    uii = [table[n] for n in sorted(table) if n > 5]
    assert ("receiveRTPAudioTelephonyEventCapability",
            {"dynamicRTPPayloadType": 101, "audioTelephoneEvent": "0-15"}) in uii
    assert ("receiveAndTransmitUserInputCapability", ("dtmf", 0)) in uii
    assert ("receiveAndTransmitUserInputCapability", ("basicString", 0)) in uii
    # one descriptor: {audio alternatives} × {video alternatives} × each user-input capability
    sim = simultaneous_capabilities(tcs)
    assert sim[0][:2] == [[1, 2, 3], [4, 5]]
    assert sorted(n for alt in sim[0][2:] for n in alt) == [n for n in sorted(table) if n > 5]


def test_choices_and_overrides() -> None:
    tcs = _wire(terminal_capability_set(CAT, audio_codecs=("PCMA",), video_codecs=("H263-1998",),
                                        user_input=False, audio_frames=30, video_max_bitrate=7680))
    table = [e["capability"] for e in tcs["capabilityTable"]]
    assert table[0] == ("receiveAudioCapability", ("g711Alaw64k", 30))
    h263 = table[1][1][1]
    assert h263["maxBitRate"] == 7680 and "h263Options" in h263 and not any(
        v for v in h263["h263Options"].values() if isinstance(v, bool))
    assert len(table) == 2
    level = _wire(terminal_capability_set(CAT, audio_codecs=(), video_codecs=("H264",), h264_level=85))
    assert level["capabilityTable"][0]["capability"][1][1]["collapsing"][1]["parameterValue"] == ("unsignedMin", 85)
    audio_only = _wire(terminal_capability_set(CAT, video_codecs=(), user_input=False))
    assert simultaneous_capabilities(audio_only) == [[[1, 2, 3]]]


@pytest.mark.parametrize("audio, video", [(("opus",), ()), ((), ("VP8",)), (("H264",), ()), ((), ("G722",))])
def test_codecs_without_h245_identity_are_refused(audio, video) -> None:
    with pytest.raises(ValueError, match="H.245"):
        terminal_capability_set(CAT, audio_codecs=audio, video_codecs=video)


def test_own_set_parses_back() -> None:
    caps = parse_capabilities(_wire(terminal_capability_set(CAT)))
    names = [c.codec_name for c in caps]
    assert names[:5] == ["G722", "PCMU", "PCMA", "H264", "H263"]
    h264 = caps[3]
    assert h264.params.level == 31 and h264.params.profile_idc == 0x42      # H.241 Level 71, Baseline
    assert h264.bitrate_cap == 1_024_000                                      # maxBitRate 10240 × 100 bit/s
    te = next(c for c in caps if c.codec_name == "telephone-event")
    assert te.details == {"payload_type": 101, "events": "0-15"}


def _entry(n: int, cap: tuple) -> dict:
    return {"capabilityTableEntryNumber": n, "capability": cap}


def test_polycom_hdx_style_set() -> None:
    """HDX: H.264 High/Baseline with Level + CustomMaxMBPS/CustomMaxFS, G.722.1 (generic audio),
    Siren14 (non-standard), G.722, G.711; built in value notation as the endpoint encodes it."""
    h264 = {"capabilityIdentifier": ("standard", (0, 0, 8, 241, 0, 0, 1)), "maxBitRate": 20480,
            "collapsing": [
                {"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 72)},
                {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", 78)},
                {"parameterIdentifier": ("standard", 3), "parameterValue": ("unsignedMin", 216)},
                {"parameterIdentifier": ("standard", 4), "parameterValue": ("unsignedMin", 15)}]}
    g7221 = {"capabilityIdentifier": ("standard", (0, 0, 7, 7221, 1, 0)), "maxBitRate": 320,
             "collapsing": [{"parameterIdentifier": ("standard", 1), "parameterValue": ("unsignedMin", 4)}]}
    siren = ("nonStandard", {"nonStandardIdentifier": ("h221NonStandard", {
        "t35CountryCode": 181, "t35Extension": 0, "manufacturerCode": 1}), "data": b"Siren14\x00\x00\x01"})
    tcs = {"sequenceNumber": 1, "protocolIdentifier": (0, 0, 8, 245, 0, 13), "capabilityTable": [
        _entry(1, ("receiveAudioCapability", siren)),
        _entry(2, ("receiveAudioCapability", ("genericAudioCapability", g7221))),
        _entry(3, ("receiveAudioCapability", ("g722-64k", 60))),
        _entry(4, ("receiveAudioCapability", ("g711Ulaw64k", 60))),
        _entry(5, ("receiveVideoCapability", ("genericVideoCapability", h264))),
        _entry(6, ("receiveAndTransmitUserInputCapability", ("dtmf", 0))),
        {"capabilityTableEntryNumber": 7},                                # a removed entry
    ], "capabilityDescriptors": [{"capabilityDescriptorNumber": 0,
                                  "simultaneousCapabilities": [[1, 2, 3, 4], [5], [6]]}]}
    caps = parse_capabilities(_wire(tcs))
    assert [c.entry for c in caps] == [1, 2, 3, 4, 5, 6]
    assert caps[0] == RemoteCapability(1, "audio", "receive", "nonStandard", None, {"value": caps[0].details["value"]})
    assert caps[1].codec_name is None and caps[1].capability == "genericAudioCapability 0.0.7.7221.1.0"
    assert (caps[2].codec_name, caps[2].params) == ("G722", AudioParams(60))
    assert caps[3].codec_name == "PCMU"
    h = caps[4]
    assert h.codec_name == "H264" and h.media == "video"
    assert h.params.level == 32 and h.params.profile_idc == 0x42          # Level 78 = 3.2; Baseline (and High)
    assert h.params.max_mbps == 216 * 500 and h.params.max_fs == 15 * 256  # CustomMaxMBPS / CustomMaxFS units
    assert caps[5].media == "userInput" and caps[5].capability == "dtmf"


def test_polycom_vsx_style_set() -> None:
    """VSX: G.722 + H.263 (with 4CIF) + H.261; H.261 is listed but unknown to the catalogue."""
    h263 = {"qcifMPI": 1, "cifMPI": 1, "cif4MPI": 2, "maxBitRate": 7680, "unrestrictedVector": False,
            "arithmeticCoding": False, "advancedPrediction": False, "pbFrames": False,
            "temporalSpatialTradeOffCapability": False, "errorCompensation": False}
    h261 = {"qcifMPI": 1, "cifMPI": 1, "temporalSpatialTradeOffCapability": True, "maxBitRate": 7680,
            "stillImageTransmission": False}
    tcs = {"sequenceNumber": 1, "protocolIdentifier": (0, 0, 8, 245, 0, 7), "capabilityTable": [
        _entry(1, ("receiveAudioCapability", ("g722-64k", 20))),
        _entry(2, ("receiveVideoCapability", ("h263VideoCapability", h263))),
        _entry(3, ("receiveVideoCapability", ("h261VideoCapability", h261))),
        _entry(4, ("receiveDataApplicationCapability", {"application": ("t120", ("separateLANStack", 0)),
                                                        "maxBitRate": 640})),
    ]}
    caps = parse_capabilities(_wire(tcs))
    assert [(c.codec_name, c.capability) for c in caps] == [
        ("G722", "g722-64k"), ("H263", "h263VideoCapability"), ("H261", "h261VideoCapability"), (None, "t120")]
    assert caps[1].params == H263Params((("QCIF", 1), ("CIF", 1), ("CIF4", 2)))
    assert caps[1].bitrate_cap == 768_000
    assert caps[2].params == H261Params((("QCIF", 1), ("CIF", 1))) and caps[3].media == "data"


def test_tshark_decodes_tunnelled_tcs() -> None:
    tcs = asn1.encode_h245(tcs_message(terminal_capability_set(CAT, video_codecs=("H264", "H263", "H263-1998"))))
    carrier = q931.build_facility(3, CALL, from_destination=True, reason=None, h245_control=[tcs])
    (frame,) = tshark_frames([("cs", carrier.encode())])
    assert "terminalCapabilitySet" in frame
    for word in ("g722-64k", "g711Ulaw64k", "g711Alaw64k", "genericVideoCapability", "h263VideoCapability",
                 "h263Options", "receiveRTPAudioTelephonyEventCapability", "dtmf", "capabilityDescriptors"):
        assert word in frame, word
