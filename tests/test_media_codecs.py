"""Typed codec parameters: SDP fmtp and H.245/H.241 are two spellings of one H264Params / H263Params ...,
and the rules that answer an SDP offer are the ones that narrow an H.245 channel."""
from __future__ import annotations

import pytest

from gateway.catalogue import default_catalogue
from gateway.h323 import asn1
from gateway.media.codecs import Limits, MediaFormat, NoMatch, rules_for
from gateway.media.codecs import audio, h261, h263, h264, opus, vp8

CAT = default_catalogue()
H264 = CAT.get("H264")


def test_h264_absent_profile_level_id_is_level_1_qcif_and_absent_mode_is_0():
    p = h264.from_fmtp(H264, {})
    assert (p.profile_idc, p.level, p.packetization_mode, p.mode_given) == (0x42, 10, 0, False)
    assert p.limits() == (99, 1485)                       # QCIF (99 macroblocks) at 15 fps
    assert h264.to_fmtp(p) == {"profile-level-id": "42000a"}   # mode 0 stays absent, as offered


def test_h264_polycom_42800d_offer_is_answered_at_its_level():
    offered = h264.from_fmtp(H264, {"profile-level-id": "42800d", "packetization-mode": "0"})
    ans, send = h264.answer(H264, offered, Limits())
    assert ans.profile_level_id == "42800d" and ans.packetization_mode == 0
    # we could take 3.1: the answer says so with max-fs / max-mbps (RFC 6184 §8.1)
    assert (ans.max_fs, ans.max_mbps) == (3600, 108000)
    assert send.limits() == (396, 11880)                  # level 1.3: CIF30 is what we may send them


def test_h264_answer_caps_level_by_room_resolution_and_keeps_1b():
    offered = h264.from_fmtp(H264, {"profile-level-id": "640028", "packetization-mode": "1"})
    ans, _ = h264.answer(H264, offered, Limits(max_resolution=(352, 288)))
    assert ans.profile_level_id == "64000d"               # High, level 1.3 (CIF30)
    b = h264.from_fmtp(H264, {"profile-level-id": "42f00b"})   # constraint_set3 + level 11 = 1b
    assert b.level == 9 and h264.common(h264.local(H264, Limits())[0], b).profile_level_id == "42f00b"


@pytest.mark.parametrize("fmtp, why", [
    ({"profile-level-id": "zz"}, "not 6 hex digits"),
    ({"packetization-mode": "7"}, "not 0, 1 or 2"),
    ({"profile-level-id": "4d0063"}, "not an H.264 level"),
    ({"profile-level-id": "f4001f"}, "profile_idc 0xf4"),
])
def test_h264_offers_we_cannot_take_say_why(fmtp, why):
    with pytest.raises(NoMatch, match=why):
        h264.answer(H264, h264.from_fmtp(H264, fmtp), Limits())


def test_h264_absurd_numbers_are_ignored_not_trusted():
    p = h264.from_fmtp(H264, {"profile-level-id": "42e01f", "max-fs": "9" * 40, "max-mbps": "-5"})
    assert p.max_fs is None and p.max_mbps is None


def test_h241_levels_and_custom_units_round_trip():
    for key in h264.LEVELS:
        p = h264.H264Params(profile_idc=0x42).with_level(key)
        value = h264.to_h245(H264, p, 1_024_000)
        back, cap = h264.from_h245(H264, value)
        assert back.level == key and cap == 1_024_000
    hdx = {"capabilityIdentifier": ("standard", h264.OID), "maxBitRate": 19200, "collapsing": [
        {"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 64 | 8)},
        {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", 85)},
        {"parameterIdentifier": ("standard", 3), "parameterValue": ("unsignedMin", 216)},
        {"parameterIdentifier": ("standard", 4), "parameterValue": ("unsignedMin", 15)}]}
    p, cap = h264.from_h245(H264, hdx)
    assert (p.level, p.max_mbps, p.max_fs, cap) == (40, 108000, 3840, 1_920_000)
    # pycrate encodes what to_h245 makes
    asn1.encode_h245(("request", ("terminalCapabilitySet", {
        "sequenceNumber": 1, "protocolIdentifier": asn1.H245_PROTOCOL_ID, "capabilityTable": [
            {"capabilityTableEntryNumber": 1, "capability": (
                "receiveVideoCapability", ("genericVideoCapability", h264.to_h245(H264, p, cap)))}]})))


def test_one_rule_for_sdp_and_h245_h264_level():
    """An HDX at level 4 meets our 3.1: SDP answers 3.1 and an H.245 channel is opened at 3.1."""
    theirs = h264.from_fmtp(H264, {"profile-level-id": "428028", "packetization-mode": "1"})
    ans, _ = h264.answer(H264, theirs, Limits())
    ours = h264.local_h245(H264)
    hdx, _ = h264.from_h245(H264, h264.to_h245(H264, theirs, None))
    assert ans.level == h264.common(ours, hdx).level == 31


def test_h263_static_34_without_fmtp_is_qcif_and_sizes_narrow_to_the_slower_mpi():
    codec = CAT.get("H263")
    p = h263.from_fmtp(codec, {})
    assert p.mpi == (("QCIF", 2),)
    vsx = h263.from_fmtp(codec, {"CIF": "2", "QCIF": "1", "CIF4": "2", "F": "1"})
    ans, send = h263.answer(codec, vsx, Limits())
    assert ans.sizes == {"QCIF": 1, "CIF": 2} and "F" in vsx.annexes and not ans.annexes
    with pytest.raises(NoMatch, match="picture sizes CIF16"):
        h263.answer(codec, h263.from_fmtp(codec, {"CIF16": "1"}), Limits())
    # the H.245 form of the same thing
    value = h263.to_h245(codec, ans, 384_000)
    assert (value["qcifMPI"], value["cifMPI"], value["maxBitRate"]) == (1, 2, 3840)
    assert h263.from_h245(codec, value) == (ans, 384_000)


def test_h263_options_name_every_mandatory_boolean_of_the_asn1():
    obj = asn1.h245_module().MULTIMEDIA_SYSTEM_CONTROL.H263Options
    mandatory = {k for k in obj._root_mand if obj._cont[k].TYPE == "BOOLEAN"}
    assert set(h263.H263_OPTIONS_BOOLEANS) == mandatory


def test_h261_sdp_and_h245():
    p = h261.from_fmtp(None, {"CIF": "2", "QCIF": "1", "D": "1"})  # type: ignore[arg-type]
    assert p.sizes == {"QCIF": 1, "CIF": 2} and p.still_images and p.largest() == (352, 288)
    assert h261.from_fmtp(None, {}).mpi == (("QCIF", 1),)       # type: ignore[arg-type]
    vsx = {"qcifMPI": 1, "cifMPI": 1, "temporalSpatialTradeOffCapability": True, "maxBitRate": 7680,
           "stillImageTransmission": False}
    q, cap = h261.from_h245(None, vsx)
    assert q.sizes == {"QCIF": 1, "CIF": 1} and cap == 768_000
    assert h261.common(p, q).sizes == {"QCIF": 1, "CIF": 2}


def test_opus_defaults_and_minimal_fmtp():
    codec = CAT.get("opus")
    p = opus.from_fmtp(codec, {"useinbandfec": "1", "stereo": "1", "maxaveragebitrate": "abc"})
    assert p.useinbandfec and p.stereo and not p.usedtx and p.maxaveragebitrate is None
    assert opus.to_fmtp(opus.local(codec, Limits())[0]) == {"minptime": "10", "useinbandfec": "1"}


def test_vp8_and_audio_rules():
    codec = CAT.get("VP8")
    assert vp8.local(codec, Limits((1280, 720))) == [vp8.VP8Params(3600, 30)]
    assert vp8.to_fmtp(vp8.from_fmtp(codec, {"max-fs": "1200"})) == {"max-fs": "1200"}
    g722 = CAT.get("G722")
    assert audio.to_h245(g722, audio.common(audio.AudioParams(20), audio.AudioParams(30)), None) == ("g722-64k", 20)
    assert audio.ptime_of_frames(30) == 20 and audio.ptime_of_frames(10) == 10
    assert rules_for("telephone-event").to_fmtp(rules_for("telephone-event").local(
        CAT.get("telephone-event"), Limits())[0]) == {"events": "0-15"}


def test_media_format_is_typed_and_checked():
    f = MediaFormat(H264, 96, h264.from_fmtp(H264, {"profile-level-id": "42e01f", "packetization-mode": "1"}))
    assert f.kind == "video" and f.clock_rate == 90000 and str(f) == "H264/90000 (pt 96)"
    assert f.fmtp() == {"profile-level-id": "42e01f", "packetization-mode": "1"}
    with pytest.raises(ValueError, match="payload type"):
        MediaFormat(H264, 200)
