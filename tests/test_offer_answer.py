"""RFC 3264 offer/answer against offers real endpoints send, and our own offers."""
from __future__ import annotations

import pytest

from gateway.catalogue import default_catalogue
from gateway.media.codecs import h264
from gateway.sip.offer_answer import LocalMedia, OfferAnswer
from gateway.sip.sdp import SdpError, SessionDescription

LOCAL = LocalMedia(audio_port=20000, video_port=20002, address="192.0.2.10")


def sdp(body: str) -> SessionDescription:
    return SessionDescription.parse(body.replace("\n", "\r\n"))


def negotiator(**policy) -> OfferAnswer:
    return OfferAnswer(default_catalogue(), **policy)


HEAD = "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\n"

BARESIP = """v=0
o=- 1904547181 3302718934 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 10000 RTP/AVP 96 9 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=sendrecv
a=ptime:20
m=video 10002 RTP/AVP 100 34
a=rtpmap:100 H264/90000
a=fmtp:100 packetization-mode=0;profile-level-id=42801f
a=rtpmap:34 H263/90000
a=rtcp-fb:* ccm fir
a=rtcp-fb:* nack
a=rtcp-fb:* nack pli
a=rtcp-fb:* goog-remb
a=sendrecv
"""

POLYCOM = """v=0
o=GroupSeries 1525450007 0 IN IP4 10.1.2.3
s=-
c=IN IP4 10.1.2.3
b=AS:2048
t=0 0
m=audio 49152 RTP/AVP 115 102 9 0 8 101
a=rtpmap:115 G7221/32000
a=fmtp:115 bitrate=48000
a=rtpmap:102 G7221/16000
a=fmtp:102 bitrate=32000
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
m=video 49154 RTP/AVP 109 110 96 34
b=AS:1920
a=rtpmap:109 H264/90000
a=fmtp:109 profile-level-id=42801e; max-mbps=216000; max-fs=3600; packetization-mode=1
a=rtpmap:110 H264/90000
a=fmtp:110 profile-level-id=42801e; max-mbps=216000; max-fs=3600
a=rtpmap:96 H263-1998/90000
a=fmtp:96 CIF=1;QCIF=1;SQCIF=1;CIF4=1
a=rtpmap:34 H263/90000
a=fmtp:34 CIF=1;QCIF=1;SQCIF=1
a=rtcp-fb:* ccm fir
a=sendrecv
m=application 49156 RTP/AVP 100
a=rtpmap:100 H224/4800
a=sendrecv
"""

PJSIP = """v=0
o=- 3914000000 3914000000 IN IP4 172.16.0.33
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 98 97 99 3 0 8 9 96
c=IN IP4 172.16.0.33
b=AS:64000
a=rtpmap:98 speex/16000
a=rtpmap:97 speex/8000
a=rtpmap:99 iLBC/8000
a=fmtp:99 mode=30
a=rtpmap:3 GSM/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:96 telephone-event/8000
a=fmtp:96 0-16
a=rtcp:4001 IN IP4 172.16.0.33
a=sendrecv
"""


def formats(sd: SessionDescription, i: int) -> list[str]:
    return sd.media[i].formats


# --------------------------------------------------------------------------- answering real offers

def test_baresip_gets_opus_and_mode0_h264_with_its_payload_types():
    answer, streams = negotiator().answer(sdp(BARESIP), LOCAL)
    audio, video = streams
    assert audio.accepted and audio.codec.name == "opus" and audio.tx.payload_type == 96
    assert (audio.tx.clock_rate, audio.codec.channels) == (48000, 2)
    assert audio.dtmf_tx_pt == 101
    assert audio.remote_host == "192.168.1.20" and audio.remote_port == 10000
    assert audio.remote_rtcp_port == 10001
    assert audio.tx.params.useinbandfec is False and audio.tx.params.stereo is True   # what the remote receives
    assert formats(answer, 0) == ["96", "101"]
    a = answer.media[0]
    assert a.rtpmap[96] == ("opus", 48000, 2)
    assert "useinbandfec=1" in a.fmtp[96]
    assert a.fmtp[101] == "0-15"
    assert a.port == 20000 and answer.connection_address(a) == "192.0.2.10"

    assert video.codec.name == "H264" and video.tx.payload_type == 100
    assert video.tx.params.packetization_mode == 0
    assert video.tx.params.profile_level_id == "42801f"
    assert video.rtcp_fb == ["ccm fir", "nack", "nack pli"]                    # goog-remb not echoed
    v = answer.media[1]
    assert formats(answer, 1) == ["100"]
    assert v.fmtp_params(100) == {"profile-level-id": "42801f", "packetization-mode": "0"}
    assert v.rtcp_fb_for(100) == ["ccm fir", "nack", "nack pli"]
    assert v.direction == "sendrecv" and v.port == 20002


def test_polycom_hdx_gets_g722_h264_mode1_and_its_limits_honoured():
    answer, streams = negotiator().answer(sdp(POLYCOM), LOCAL)
    audio, video, fecc = streams
    assert audio.codec.name == "G722" and audio.tx.payload_type == 9      # Siren (G7221) skipped
    assert audio.dtmf_tx_pt == 101
    assert formats(answer, 0) == ["9", "101"]
    assert video.codec.name == "H264" and video.tx.payload_type == 109
    assert video.tx.params.packetization_mode == 1
    # their receive limits, for our encoder: max-fs 3600 (720p), max-mbps 216000 (60 fps)
    assert video.tx.params.limits() == (3600, 216000)
    ans = answer.media[1].fmtp_params(109)
    assert ans["profile-level-id"] == "42801e"         # their profile, the lower level (3 < our 3.1)
    assert ans["packetization-mode"] == "1"
    assert h264.from_fmtp(None, ans).limits() == (3600, 108000)          # we can take 720p30 from them
    assert video.bandwidth_kbps == 1920
    assert answer.media[1].bandwidth["AS"] == 1920
    assert answer.media[1].rtcp_fb_for(109) == ["ccm fir"]
    # far-end camera control (H.224) is refused with port 0, same media and formats
    assert not fecc.accepted and answer.media[2].port == 0
    assert answer.media[2].media == "application" and formats(answer, 2) == ["100"]
    assert len(answer.media) == 3


def test_polycom_mode0_only_room_policy_and_h263_sizes():
    # a room that only allows H.263+: picture sizes are the ones both do, MPI the slower
    answer, streams = negotiator(video_codecs=["H263-1998"]).answer(sdp(POLYCOM), LOCAL)
    assert streams[1].codec.name == "H263-1998" and streams[1].tx.payload_type == 96
    assert answer.media[1].fmtp_params(96) == {"CIF": "1", "QCIF": "1"}
    # a room capped at QCIF answers QCIF only
    answer, streams = negotiator(video_codecs=["H263"], max_resolution=(176, 144)).answer(sdp(POLYCOM), LOCAL)
    assert streams[1].tx.payload_type == 34
    assert answer.media[1].fmtp_params(34) == {"QCIF": "1"}


def test_pjsip_desk_phone_gets_pcmu_and_its_telephone_event():
    answer, streams = negotiator().answer(sdp(PJSIP), LOCAL)
    (audio,) = streams
    assert audio.codec.name == "PCMU" and audio.tx.payload_type == 0      # speex, iLBC, GSM skipped
    assert audio.dtmf_tx_pt == 96
    assert audio.remote_host == "172.16.0.33"                          # media-level c=
    assert audio.remote_rtcp_port == 4001                              # a=rtcp
    assert formats(answer, 0) == ["0", "96"]
    assert answer.media[0].fmtp[96] == "0-15"
    assert answer.media[0].bandwidth == {"AS": 64000}
    assert len(answer.media) == 1


def test_dynamic_payload_type_is_answered_with_the_offerers_number():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 109 0 110\na=rtpmap:109 OPUS/48000/2\n"
                "a=fmtp:109 useinbandfec=1\na=rtpmap:110 telephone-event/8000\n")
    answer, (audio,) = negotiator().answer(offer, LOCAL)
    assert audio.codec.name == "opus" and audio.tx.payload_type == 109 and audio.dtmf_tx_pt == 110
    assert formats(answer, 0) == ["109", "110"]
    assert answer.media[0].rtpmap[109] == ("opus", 48000, 2)


def test_static_payload_type_without_rtpmap_is_known_by_number():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 18 8\n")
    _, (audio,) = negotiator().answer(offer, LOCAL)
    assert audio.codec.name == "PCMA" and audio.tx.payload_type == 8 and audio.dtmf_tx_pt is None


def test_offerer_order_wins_over_room_preference():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 8 0 9\n")
    answer, (audio,) = negotiator(audio_codecs=["G722", "PCMU", "PCMA"]).answer(offer, LOCAL)
    assert audio.codec.name == "PCMA"
    assert formats(answer, 0)[0] == "8"


def test_room_that_allows_only_pcmu():
    answer, streams = negotiator(audio_codecs=["PCMU"], video_codecs=["H264"]).answer(sdp(BARESIP), LOCAL)
    assert streams[0].codec.name == "PCMU" and streams[0].tx.payload_type == 0
    assert formats(answer, 0) == ["0", "101"]


def test_room_without_dtmf_does_not_answer_telephone_event():
    answer, streams = negotiator(dtmf=False).answer(sdp(PJSIP), LOCAL)
    assert streams[0].dtmf_tx_pt is None and formats(answer, 0) == ["0"]


def test_only_g729_is_refused_with_488_and_a_reason():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 18 101\na=rtpmap:18 G729/8000\na=fmtp:18 annexb=no\n"
                "a=rtpmap:101 telephone-event/8000\n")
    with pytest.raises(SdpError) as err:
        negotiator(audio_codecs=["PCMU", "PCMA"]).answer(offer, LOCAL)
    assert err.value.status == 488
    assert err.value.reason.startswith("no common codec: offered G729/8000")
    assert "room allows PCMU, PCMA" in err.value.reason


KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"     # 30 octets, base64


def test_srtp_keys_are_not_taken_over_plain_signalling():
    offer = sdp(HEAD + f"m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\n")
    with pytest.raises(SdpError) as err:
        negotiator().answer(offer, LOCAL)
    assert err.value.status == 488 and "only over SIP TLS" in err.value.reason


def test_sdes_srtp_over_tls_is_answered_with_our_own_key():
    import base64

    offer = sdp(HEAD + "m=audio 5000 RTP/SAVP 0 101\na=rtpmap:101 telephone-event/8000\n"
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:4\n"           # an MKI: skipped
                f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31\n"
                f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\n")
    oa = negotiator()
    oa.secure_signalling = True
    answer, streams = oa.answer(offer, LOCAL)
    m = answer.media[0]
    assert m.proto == "RTP/SAVP" and m.port == 20000
    [crypto] = m.attrs("crypto")
    tag, suite, inline = crypto.split()
    assert (tag, suite) == ("2", "AES_CM_128_HMAC_SHA1_32")
    ours = base64.b64decode(inline.removeprefix("inline:"))
    assert len(ours) == 30 and ours != base64.b64decode(KEY)
    assert streams[0].srtp == ("AES_CM_128_HMAC_SHA1_32", ours, base64.b64decode(KEY))
    assert streams[0].plan("10.0.0.9").srtp == streams[0].srtp


def test_encryption_policy_of_the_room():
    plain = sdp(HEAD + "m=audio 5000 RTP/AVP 0\n")
    oa = negotiator()
    oa.encryption, oa.secure_signalling = "required", True
    with pytest.raises(SdpError) as err:
        oa.answer(plain, LOCAL)
    assert err.value.status == 488 and "needs encrypted media" in err.value.reason
    srtp = sdp(HEAD + f"m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\n")
    assert oa.answer(srtp, LOCAL)[1][0].accepted
    oa.encryption = "off"
    with pytest.raises(SdpError) as err:
        oa.answer(srtp, LOCAL)
    assert "encryption: off" in err.value.reason
    dtls = sdp(HEAD + "m=audio 5000 UDP/TLS/RTP/SAVPF 0\na=fingerprint:sha-256 AA\n")
    oa.encryption = "preferred"
    with pytest.raises(SdpError) as err:
        oa.answer(dtls, LOCAL)
    assert "for browsers" in err.value.reason


def test_our_offer_over_tls_carries_a_key_per_suite_and_the_answer_picks_one():
    import base64

    oa = negotiator(audio_codecs=["PCMU"])
    assert not oa.offers_srtp()                               # plain signalling: no keys in the SDP
    assert [m.proto for m in oa.offer(LOCAL).media] == ["RTP/AVP", "RTP/AVP"]
    oa.secure_signalling = True
    offer = oa.offer(LOCAL)
    assert [m.proto for m in offer.media] == ["RTP/SAVP", "RTP/SAVP"]
    lines = [c.split() for c in offer.media[0].attrs("crypto")]
    assert [(t, s) for t, s, _ in lines] == [("1", "AES_CM_128_HMAC_SHA1_80"), ("2", "AES_CM_128_HMAC_SHA1_32")]
    keys = {t: base64.b64decode(k.removeprefix("inline:")) for t, _, k in lines}
    assert len(set(keys.values())) == 2 and all(len(k) == 30 for k in keys.values())
    video_keys = {c.split()[2] for c in offer.media[1].attrs("crypto")}
    assert not video_keys & {k for _, _, k in lines}          # each stream its own keys
    answer = sdp(HEAD + f"m=audio 5000 RTP/SAVP 0\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\n"
                 "m=video 0 RTP/SAVP 96\n")
    streams = oa.process_answer(offer, answer)
    assert streams[0].srtp == ("AES_CM_128_HMAC_SHA1_32", keys["2"], base64.b64decode(KEY))
    for bad in (f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\n",     # a tag we never offered
                f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\n",     # our tag, another suite
                ""):
        with pytest.raises(SdpError) as err:
            oa.process_answer(offer, sdp(HEAD + "m=audio 5000 RTP/SAVP 0\n" + bad))
        assert err.value.status == 488 and "a=crypto" in err.value.reason
    oa.encryption = "off"
    assert [m.proto for m in oa.offer(LOCAL).media] == ["RTP/AVP", "RTP/AVP"]


def test_a_reoffer_keeps_srtp_and_brings_fresh_keys():
    oa = negotiator(audio_codecs=["PCMU"])
    oa.secure_signalling = True
    first = oa.offer(LocalMedia(20000, None, "192.0.2.10"))
    again = oa.reoffer(first, LocalMedia(20000, None, "192.0.2.10"), direction="sendonly")
    assert again.media[0].proto == "RTP/SAVP"
    assert set(again.media[0].attrs("crypto")).isdisjoint(first.media[0].attrs("crypto"))
    answer = sdp(HEAD + f"m=audio 5000 RTP/SAVP 0\na=recvonly\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\n")
    assert oa.process_answer(again, answer)[0].srtp[1] != oa.process_answer(again, answer)[0].srtp[2]


def test_site_and_room_encryption_combine():
    from gateway.dialplan.model import combined_encryption as c

    assert c("preferred", None) == "preferred" and c(None, None) == "preferred"
    assert c("preferred", "required") == "required" and c("off", "required") == "required"
    assert c("required", "off") == "required"                  # the room then refuses the site
    assert c("preferred", "off") == "off" and c("off", None) == "off"


def test_best_effort_srtp_falls_back_to_the_plain_rtp_stream():
    offer = sdp(HEAD + "m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abcd\n"
                "m=audio 5000 RTP/AVP 0\n")
    answer, streams = negotiator().answer(offer, LOCAL)
    assert [s.accepted for s in streams] == [False, True]
    assert answer.media[0].port == 0 and answer.media[0].proto == "RTP/SAVP"
    assert answer.media[1].port == 20000


def test_avpf_offer_is_answered_with_avpf():
    offer = sdp(HEAD + "m=video 5002 RTP/AVPF 97\na=rtpmap:97 VP8/90000\na=rtcp-fb:97 nack pli\n"
                "m=audio 5000 RTP/AVPF 0\n")
    answer, streams = negotiator().answer(offer, LOCAL)
    assert [m.proto for m in answer.media] == ["RTP/AVPF", "RTP/AVPF"]
    assert streams[0].codec.name == "VP8" and streams[0].rtcp_fb == ["nack pli"]
    assert streams[1].codec.name == "PCMU"


def test_t38_image_stream_and_second_audio_get_port_zero():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 0\nm=audio 5004 RTP/AVP 8\nm=image 5006 udptl t38\n"
                "a=T38FaxVersion:0\n")
    answer, streams = negotiator().answer(offer, LOCAL)
    assert [m.port for m in answer.media] == [20000, 0, 0]
    assert [m.media for m in answer.media] == ["audio", "audio", "image"]
    assert answer.media[2].proto == "udptl" and formats(answer, 2) == ["t38"]
    assert "m=image 0 udptl t38" in answer.serialize()
    assert streams[1].reason == "only one audio stream is supported"


def test_offer_without_video_port_locally_rejects_video():
    answer, streams = negotiator().answer(sdp(BARESIP), LocalMedia(20000, None, "192.0.2.10"))
    assert streams[0].accepted and not streams[1].accepted and answer.media[1].port == 0


@pytest.mark.parametrize("attr, conn, ours, answered", [
    ("a=sendonly\n", "10.0.0.9", "recvonly", "recvonly"),
    ("a=recvonly\n", "10.0.0.9", "sendonly", "sendonly"),
    ("a=inactive\n", "10.0.0.9", "inactive", "inactive"),
    ("", "0.0.0.0", "inactive", "inactive"),                  # RFC 2543 hold (old Polycom/Cisco)
    ("a=sendonly\n", "0.0.0.0", "recvonly", "recvonly"),      # both styles at once
    ("a=sendrecv\n", "10.0.0.9", "sendrecv", "sendrecv"),     # resume
])
def test_hold_and_resume_directions(attr, conn, ours, answered):
    offer = sdp(f"v=0\no=- 1 2 IN IP4 10.0.0.9\ns=-\nc=IN IP4 {conn}\nt=0 0\nm=audio 5000 RTP/AVP 0\n{attr}")
    answer, (audio,) = negotiator().answer(offer, LOCAL)
    assert audio.direction == ours
    assert answer.media[0].direction == answered
    assert answer.connection_address(answer.media[0]) == "192.0.2.10"   # we never answer 0.0.0.0


def test_we_hold_the_peer_while_answering():
    _, (audio,) = negotiator().answer(sdp(HEAD + "m=audio 5000 RTP/AVP 0\n"), LOCAL, direction="sendonly")
    assert audio.direction == "sendonly"


def test_h264_packetization_mode_absent_means_mode_0_and_mode_2_is_refused():
    offer = sdp(HEAD + "m=video 5002 RTP/AVP 97 98\na=rtpmap:97 H264/90000\n"
                "a=fmtp:97 profile-level-id=42e01f;packetization-mode=2\n"
                "a=rtpmap:98 H264/90000\na=fmtp:98 profile-level-id=42e01f\nm=audio 5000 RTP/AVP 0\n")
    answer, streams = negotiator().answer(offer, LOCAL)
    assert streams[0].tx.payload_type == 98 and streams[0].tx.params.packetization_mode == 0
    assert "packetization-mode" not in answer.media[0].fmtp_params(98)     # absent, like the offer
    # mode 2 alone: no video, the call goes on with audio
    offer = sdp(HEAD + "m=video 5002 RTP/AVP 97\na=rtpmap:97 H264/90000\n"
                "a=fmtp:97 profile-level-id=42e01f;packetization-mode=2\nm=audio 5000 RTP/AVP 0\n")
    answer, streams = negotiator().answer(offer, LOCAL)
    assert not streams[0].accepted and "packetization-mode 2" in streams[0].reason
    assert answer.media[0].port == 0 and streams[1].accepted


def test_h264_level_capped_by_room_and_unsupported_profile_skipped():
    offer = sdp(HEAD + "m=video 5002 RTP/AVP 97 98\na=rtpmap:97 H264/90000\n"
                "a=fmtp:97 profile-level-id=f4001f;packetization-mode=1\n"       # High 4:4:4
                "a=rtpmap:98 H264/90000\na=fmtp:98 profile-level-id=640028;packetization-mode=1\n")
    answer, (video,) = negotiator(max_resolution=(352, 288)).answer(offer, LOCAL)
    assert video.tx.payload_type == 98
    assert answer.media[0].fmtp_params(98)["profile-level-id"] == "64000d"      # High, level 1.3 (CIF30)
    assert "max-fs" not in answer.media[0].fmtp_params(98)


def test_room_max_bitrate_sets_b_as():
    answer, _ = negotiator(max_bitrate_kbps=768).answer(sdp(POLYCOM), LOCAL)
    assert answer.media[1].bandwidth == {"AS": 768}
    answer, _ = negotiator(max_bitrate_kbps=512).answer(sdp(BARESIP), LOCAL)
    assert answer.media[1].bandwidth == {"AS": 512}
    offer = negotiator(max_bitrate_kbps=512).offer(LOCAL)
    assert offer.media[1].bandwidth == {"AS": 512}


def test_tias_is_answered_with_the_minimum():
    offer = sdp(HEAD + "m=video 5002 RTP/AVP 34\nb=TIAS:2000000\nb=AS:2100\n")
    answer, (video,) = negotiator(max_bitrate_kbps=1000).answer(offer, LOCAL)
    assert answer.media[0].bandwidth == {"AS": 1000, "TIAS": 1000000}
    assert video.bandwidth_kbps == 2000


def test_answer_keeps_origin_and_bumps_version_only_on_change():
    oa = negotiator()
    first, _ = oa.answer(sdp(BARESIP), LOCAL)
    same, _ = oa.answer(sdp(BARESIP), LOCAL, previous=first)
    assert same.origin == first.origin
    held, _ = oa.answer(sdp(BARESIP.replace("a=sendrecv", "a=sendonly")), LOCAL, previous=first)
    assert held.origin.sess_id == first.origin.sess_id
    assert held.origin.sess_version == first.origin.sess_version + 1


def test_answer_round_trips_through_the_parser():
    answer, _ = negotiator().answer(sdp(POLYCOM), LOCAL)
    again = SessionDescription.parse(answer.serialize())
    assert again == answer and again.warnings == []


def test_no_media_and_missing_connection_are_errors():
    with pytest.raises(SdpError) as err:
        negotiator().answer(sdp(HEAD), LOCAL)
    assert err.value.status == 488
    with pytest.raises(SdpError) as err:
        negotiator().answer(sdp("v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n"), LOCAL)
    assert "no c= line" in err.value.reason


# --------------------------------------------------------------------------- our offers

def test_late_offer_lists_the_catalogue_codecs():
    offer = negotiator().offer(LOCAL)
    text = offer.serialize()
    again = SessionDescription.parse(text)
    assert again == offer
    audio, video = offer.media
    names = [audio.rtpmap[pt].encoding for pt in audio.payload_types]
    assert names == ["opus", "G722", "PCMU", "PCMA", "telephone-event"]
    assert audio.formats[1:4] == ["9", "0", "8"]                        # static where they exist
    assert all(pt >= 96 for pt in (audio.payload_types[0], audio.payload_types[-1]))
    assert audio.fmtp_params(audio.payload_types[0])["useinbandfec"] == "1"
    assert audio.direction == "sendrecv" and audio.port == 20000
    vnames = [video.rtpmap[pt].encoding for pt in video.payload_types]
    assert vnames == ["H264", "H264", "VP8", "H263-1998", "H263", "H261"]
    modes = [video.fmtp_params(pt).get("packetization-mode") for pt in video.payload_types[:2]]
    assert modes == ["1", "0"]
    assert video.formats[-2:] == ["34", "31"]                            # H.263 and H.261: static
    assert video.fmtp_params(31) == {"CIF": "1", "QCIF": "1"}
    assert len(set(audio.payload_types + video.payload_types)) == 11     # no number used twice
    assert video.rtcp_fb == {"*": ["nack", "nack pli", "ccm fir"]}
    assert "AS" in video.bandwidth and video.direction == "sendrecv"
    assert offer.connection_address(audio) == "192.0.2.10"


def test_offer_respects_room_policy():
    offer = negotiator(audio_codecs=["PCMA", "PCMU"], video_codecs=["H263"], dtmf=False,
                       max_resolution=(176, 144)).offer(LOCAL)
    assert offer.media[0].formats == ["8", "0"]
    assert offer.media[1].formats == ["34"] and offer.media[1].fmtp_params(34) == {"QCIF": "1"}
    assert len(negotiator().offer(LOCAL, video=False).media) == 1


def test_process_answer_from_a_cisco_style_answer():
    oa = negotiator()
    offer = oa.offer(LOCAL)
    mode0_pt = offer.media[1].payload_types[1]
    answer = sdp(f"""v=0
o=CiscoSystemsSIP-GW-UserAgent 4188 7219 IN IP4 10.20.0.1
s=SIP Call
c=IN IP4 10.20.0.1
t=0 0
m=audio 17000 RTP/AVP 0 {offer.media[0].payload_types[-1]}
a=rtpmap:0 PCMU/8000
a=rtpmap:{offer.media[0].payload_types[-1]} telephone-event/8000
a=fmtp:{offer.media[0].payload_types[-1]} 0-15
a=ptime:30
m=video 17002 RTP/AVP {mode0_pt}
b=AS:768
a=rtpmap:{mode0_pt} H264/90000
a=fmtp:{mode0_pt} profile-level-id=42801e;packetization-mode=0
a=rtcp-fb:* nack pli
a=recvonly
""")
    audio, video = oa.process_answer(offer, answer)
    assert audio.codec.name == "PCMU" and audio.tx.payload_type == 0 and audio.remote_ptime == 30
    assert audio.dtmf_tx_pt == offer.media[0].payload_types[-1]
    assert audio.remote_host == "10.20.0.1" and audio.remote_port == 17000
    assert audio.direction == "sendrecv"
    assert video.codec.name == "H264" and video.tx.payload_type == mode0_pt
    assert video.rx.payload_type == mode0_pt
    assert video.tx.params.packetization_mode == 0 and video.tx.params.profile_level_id == "42801e"
    assert video.direction == "sendonly"                        # they only receive
    assert video.bandwidth_kbps == 768 and video.rtcp_fb == ["nack pli"]


def test_process_answer_accepts_a_renumbered_codec_and_a_rejected_stream():
    oa = negotiator()
    offer = oa.offer(LOCAL)
    answer = sdp(HEAD + "m=audio 6000 RTP/AVP 111\na=rtpmap:111 opus/48000/2\nm=video 0 RTP/AVP 34\n")
    audio, video = oa.process_answer(offer, answer)
    assert audio.codec.name == "opus" and audio.tx.payload_type == 111
    assert audio.rx.payload_type == offer.media[0].payload_types[0]
    assert not video.accepted


def test_process_answer_reads_a_missing_trailing_stream_as_refused():
    # late-offer answers from some devices carry only the audio line
    oa = negotiator()
    offer = oa.offer(LOCAL)
    audio, video = oa.process_answer(offer, sdp(HEAD + "m=audio 6000 RTP/AVP 0\n"))
    assert audio.accepted and audio.codec.name == "PCMU"
    assert not video.accepted and "missing" in video.reason


@pytest.mark.parametrize("media, words", [
    ("m=audio 6000 RTP/AVP 18\na=rtpmap:18 G729/8000\n", "G729/8000 (payload type 18), which we did not offer"),
    ("m=audio 6000 RTP/AVP 0\nm=video 0 RTP/AVP 34\nm=video 0 RTP/AVP 34\n", "our offer had 2"),
    ("m=audio 6000 RTP/SAVP 0\nm=video 0 RTP/AVP 34\n", "RTP/SAVP"),
    ("m=video 6000 RTP/AVP 34\nm=audio 0 RTP/AVP 0\n", "is video"),
])
def test_process_answer_rejects_answers_that_do_not_fit(media, words):
    oa = negotiator()
    offer = oa.offer(LOCAL)
    body = HEAD + media
    if media.count("m=") == 1 and "our offer had" not in words:
        body += "m=video 0 RTP/AVP 34\n"
    with pytest.raises(SdpError) as err:
        oa.process_answer(offer, sdp(body))
    assert words in err.value.reason


def test_reoffer_for_hold_keeps_session_and_bumps_version():
    oa = negotiator()
    first = oa.offer(LOCAL)
    hold = oa.reoffer(first, LOCAL, direction="sendonly")
    assert hold.origin.sess_id == first.origin.sess_id
    assert hold.origin.sess_version == first.origin.sess_version + 1
    assert [m.direction for m in hold.media] == ["sendonly", "sendonly"]
    assert [m.formats for m in hold.media] == [m.formats for m in first.media]
    resume = oa.reoffer(hold, LOCAL)
    assert resume.origin.sess_version == first.origin.sess_version + 2
    assert resume.media[0].direction == "sendrecv"


def test_reoffer_keeps_m_lines_we_no_longer_offer():
    oa = negotiator()
    first = oa.offer(LOCAL)
    again = oa.reoffer(first, LocalMedia(20000, None, "192.0.2.10"))
    assert [m.media for m in again.media] == ["audio", "video"]
    assert again.media[1].port == 0


def test_unknown_codec_in_room_policy_is_a_clear_error():
    with pytest.raises(KeyError, match="G729"):
        negotiator(audio_codecs=["G729"])
    with pytest.raises(ValueError, match="video codec"):
        negotiator(audio_codecs=["H264"])


def test_sloppy_rtpmaps_seen_in_the_wild_still_match():
    offer = sdp(HEAD + "m=audio 5000 RTP/AVP 9 107\na=rtpmap:9 G722/16000\na=rtpmap:107 opus/48000\n")
    answer, (audio,) = negotiator().answer(offer, LOCAL)
    assert audio.codec.name == "G722" and answer.media[0].rtpmap[9] == ("G722", 8000, 1)
    answer, (audio,) = negotiator(audio_codecs=["opus"]).answer(offer, LOCAL)
    assert audio.tx.payload_type == 107 and answer.media[0].rtpmap[107] == ("opus", 48000, 2)


def test_for_room_reads_a_room_spec():
    from gateway.dialplan.model import RoomSpec

    room = RoomSpec(id="r", name="R", numbers=("100",), pin=None, max_participants=10, layout="cp-2x2",
                    audio_codecs=("PCMA",), video_codecs=("H264",), max_resolution=(640, 360),
                    max_bitrate_kbps=640, cascade=None, template=None, line=1)
    offer = OfferAnswer.for_room(default_catalogue(), room).offer(LOCAL)
    assert offer.media[0].formats[0] == "8"
    assert offer.media[1].bandwidth == {"AS": 640}
    # 640x360 is 920 macroblocks, at 30 fps level 3 (1e) is enough
    assert offer.media[1].fmtp_params(int(offer.media[1].formats[0]))["profile-level-id"] == "42e01e"


def test_mangled_offers_never_crash():
    import random

    rnd = random.Random(7)
    oa = negotiator(max_resolution=(352, 288), max_bitrate_kbps=384)
    alphabet = "0123456789 =:/;-aAcmRTPV\n."
    for _ in range(400):
        chars = list(rnd.choice([BARESIP, POLYCOM, PJSIP]))
        for _ in range(rnd.randint(1, 5)):
            pos = rnd.randrange(len(chars))
            if rnd.random() < 0.5:
                chars[pos] = rnd.choice(alphabet)
            else:
                chars.insert(pos, rnd.choice(alphabet))
        try:
            answer, _ = oa.answer(SessionDescription.parse("".join(chars)), LOCAL)
            SessionDescription.parse(answer.serialize())
        except SdpError as exc:
            assert exc.reason and exc.status in (400, 488)
