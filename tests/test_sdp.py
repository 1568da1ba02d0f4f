"""SDP model (RFC 8866 / 4566): parse real-world bodies, serialize, round trip, reject nonsense."""
from __future__ import annotations

import pytest

from gateway.sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    format_fmtp,
    parse_fmtp,
)

BARESIP = (
    "v=0\r\n"
    "o=- 1904547181 3302718934 IN IP4 192.168.1.20\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.20\r\n"
    "t=0 0\r\n"
    "m=audio 10000 RTP/AVP 96 9 0 8 101\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp-rsize\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=ptime:20\r\n"
    "m=video 10002 RTP/AVP 100 34\r\n"
    "b=AS:2000\r\n"
    "a=rtpmap:100 H264/90000\r\n"
    "a=fmtp:100 packetization-mode=0;profile-level-id=42801f\r\n"
    "a=rtpmap:34 H263/90000\r\n"
    "a=rtcp-fb:* ccm fir\r\n"
    "a=rtcp-fb:* nack\r\n"
    "a=rtcp-fb:* nack pli\r\n"
    "a=rtcp:10005 IN IP4 192.168.1.20\r\n"
    "a=sendrecv\r\n"
)


def test_parse_baresip_offer():
    sd = SessionDescription.parse(BARESIP)
    assert sd.origin == Origin("-", "1904547181", 3302718934, "IN", "IP4", "192.168.1.20")
    assert sd.session_name == "-"
    assert sd.timing == [(0, 0)]
    assert [m.media for m in sd.media] == ["audio", "video"]
    audio, video = sd.media
    assert audio.port == 10000 and audio.proto == "RTP/AVP"
    assert audio.formats == ["96", "9", "0", "8", "101"]
    assert audio.rtpmap[96] == RtpMap("opus", 48000, 2)
    enc, clock, ch = audio.rtpmap[9]
    assert (enc, clock, ch) == ("G722", 8000, 1)
    assert audio.fmtp == {96: "stereo=1;sprop-stereo=1", 101: "0-15"}
    assert audio.fmtp_params(101) == {"events": "0-15"}
    assert audio.fmtp_params(96) == {"stereo": "1", "sprop-stereo": "1"}
    assert audio.ptime == 20 and audio.maxptime is None
    assert audio.direction == "sendrecv"
    assert ("rtcp-rsize", None) in audio.attributes
    assert sd.connection_address(audio) == "192.168.1.20"
    assert video.bandwidth == {"AS": 2000}
    assert video.rtcp_fb == {"*": ["ccm fir", "nack", "nack pli"]}
    assert video.rtcp_fb_for(100) == ["ccm fir", "nack", "nack pli"]
    assert video.rtcp == 10005 and video.rtcp_address == "192.168.1.20"
    assert sd.warnings == []


def test_serialize_round_trip_is_exact_for_canonical_input():
    sd = SessionDescription.parse(BARESIP)
    text = sd.serialize()
    assert text == BARESIP
    assert SessionDescription.parse(text) == sd


def test_serialize_puts_lines_in_rfc_order_with_crlf():
    sd = SessionDescription(origin=Origin("cau", "42", 7, "IN", "IP4", "192.0.2.1"), session_name="Cau",
                            connection=Connection.for_host("192.0.2.1"), bandwidth={"AS": 512})
    m = MediaDescription(media="audio", port=4000, proto="RTP/AVP", formats=["0"],
                         connection=Connection.for_host("2001:db8::1"))
    m.add("rtpmap", "0 PCMU/8000")
    m.set_direction("recvonly")
    sd.media.append(m)
    sd.attributes.append(("tool", "cau"))
    text = sd.serialize()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    kinds = [line[0] for line in text.split("\r\n") if line]
    assert kinds == ["v", "o", "s", "c", "b", "t", "a", "m", "c", "a", "a"]
    assert "c=IN IP6 2001:db8::1\r\n" in text
    again = SessionDescription.parse(text)
    assert again.media[0].direction == "recvonly"
    assert again.connection_address(again.media[0]) == "2001:db8::1"


def test_lf_only_trailing_blanks_and_missing_s_t_are_tolerated():
    text = ("v=0\n"
            "o=PolycomVSX 1 1 IN IP4 10.0.0.5   \n"
            "c=IN IP4 10.0.0.5\n"
            "\n"
            "m=audio 49170 RTP/AVP 0 8  \n"
            "a=rtpmap:0 PCMU/8000 \n"
            "a=ptime:30.0\n")
    sd = SessionDescription.parse(text.encode("ascii"))
    assert sd.media[0].formats == ["0", "8"]
    assert sd.media[0].rtpmap[0] == RtpMap("PCMU", 8000, 1)
    assert sd.media[0].ptime == 30
    assert sd.session_name == "-" and sd.timing == [(0, 0)]
    assert any("no s= line" in w for w in sd.warnings)
    assert any("no t= line" in w for w in sd.warnings)
    # what we send back is proper SDP again
    assert "s=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n" in sd.serialize()


def test_session_level_direction_and_connection_apply_to_media():
    sd = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                                  "a=sendonly\r\nm=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 34\r\n"
                                  "a=inactive\r\n")
    audio, video = sd.media
    assert audio.direction == "sendrecv"             # media level alone
    assert sd.direction_of(audio) == "sendonly"      # session level applies
    assert sd.direction_of(video) == "inactive"      # media level wins
    assert sd.connection_of(audio).is_hold


def test_multicast_connection_and_port_count_survive():
    sd = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 224.2.36.42/127\r\n"
                                  "t=0 0\r\nm=video 51372/2 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n")
    m = sd.media[0]
    assert m.port == 51372 and m.port_count == 2
    assert sd.connection.address == "224.2.36.42" and sd.connection.suffix == "/127"
    assert "m=video 51372/2 RTP/AVP 99" in sd.serialize()
    assert "c=IN IP4 224.2.36.42/127" in sd.serialize()


def test_non_rtp_media_keeps_string_formats():
    sd = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
                                  "m=image 4002 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n")
    m = sd.media[0]
    assert m.formats == ["t38"] and not m.is_rtp and m.payload_types == []
    assert m.attr("T38FaxRateManagement") == "transferredTCF"


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "v=0"),
    ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "version"),
    ("v=0\r\ns=-\r\nt=0 0\r\n", "o= line"),
    ("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "6 fields"),
    ("v=0\r\no=- 1 abc IN IP4 1.2.3.4\r\n", "sess-version"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n", "c="),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=ATM NSAP 47.0005\r\n", "network type"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n", "port"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP\r\n", "no formats"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP PCMU\r\n", "payload types"),
    ("garbage\r\nv=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "not <type>=<value>"),
])
def test_unusable_sdp_raises_a_reason(text, words):
    with pytest.raises(SdpError) as err:
        SessionDescription.parse(text)
    assert words in err.value.reason
    assert err.value.status == 400


def test_bad_bandwidth_and_unknown_lines_are_recorded_not_fatal():
    sd = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
                                  "y=1234\r\nb=AS:lots\r\nm=audio 4000 RTP/AVP 0\r\nb=TIAS:64000\r\n"
                                  "a=rtpmap:97 speex/8000\r\na=rtpmap:0 PCMU\r\na=\r\nnot a line\r\n")
    assert sd.bandwidth == {}
    assert sd.media[0].bandwidth == {"TIAS": 64000}
    assert sd.media[0].rtpmap == {}           # the broken rtpmap only loses its own format
    assert len(sd.warnings) == 6, sd.warnings


def test_fmtp_helpers_handle_real_world_spellings():
    assert parse_fmtp("profile-level-id=42801f; packetization-mode=1 ") == {
        "profile-level-id": "42801f", "packetization-mode": "1"}
    assert parse_fmtp("CIF=1 QCIF=1") == {"CIF": "1", "QCIF": "1"}
    assert parse_fmtp("CIF=1;QCIF=2;F;J") == {"CIF": "1", "QCIF": "2", "F": "", "J": ""}
    assert parse_fmtp("0-15", "telephone-event") == {"events": "0-15"}
    assert format_fmtp({"events": "0-15"}, "telephone-event") == "0-15"
    assert format_fmtp({"CIF": "1", "F": ""}) == "CIF=1;F"
