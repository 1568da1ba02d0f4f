"""What the gateway makes of WHIP clients' offers and trickle fragments, its certificate and its
WebRTC settings — each with the answer a client or an operator would see."""
from __future__ import annotations

import os
import stat

import pytest

from gateway.config import ConfigError, load_settings
from gateway.webrtc import tls
from gateway.webrtc.offer import OfferError, prepare_offer
from gateway.webrtc.whip import clean_name, parse_sdpfrag

# the shape of Chrome's offer (trimmed): VP8, then H.264 in several profiles and both modes, RTX
CHROME = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdefghijklmn
a=ice-options:trickle
a=fingerprint:sha-256 11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=msid:stream audio0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1001 cname:x
m=video 9 UDP/TLS/RTP/SAVPF {video_pts}
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdefghijklmn
a=ice-options:trickle
a=fingerprint:sha-256 11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00
a=setup:actpass
a=mid:1
a=sendrecv
a=msid:stream video0
a=rtcp-mux
a=rtcp-rsize
{video_lines}
a=ssrc-group:FID 2001 2002
a=ssrc:2001 cname:x
a=ssrc:2002 cname:x
"""
VIDEO = {
    "vp8": ("96", ["a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli"]),
    "rtx96": ("97", ["a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96"]),
    "h264m0": ("102", ["a=rtpmap:102 H264/90000", "a=rtcp-fb:102 nack pli",
                       "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"]),
    "h264high": ("104", ["a=rtpmap:104 H264/90000",
                         "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f"]),
    "h264cb": ("106", ["a=rtpmap:106 H264/90000", "a=rtcp-fb:106 nack pli",
                       "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"]),
    "rtx106": ("107", ["a=rtpmap:107 rtx/90000", "a=fmtp:107 apt=106"]),
    "av1": ("45", ["a=rtpmap:45 AV1/90000"]),
}


def chrome(*video: str) -> str:
    pts = " ".join(VIDEO[v][0] for v in video)
    lines = "\n".join(l for v in video for l in VIDEO[v][1])
    return CHROME.format(video_pts=pts, video_lines=lines).replace("\n", "\r\n")


def test_the_offerers_first_usable_codec_is_kept_with_its_rtx_and_nothing_else():
    p = prepare_offer(chrome("vp8", "rtx96", "h264m0", "h264cb", "rtx106", "av1"))
    audio, video = p.streams
    assert (audio.encoding, audio.payload_type, video.encoding, video.payload_type) == ("opus", 111, "VP8", 96)
    m_video = [l for l in p.sdp.split("\r\n") if l.startswith("m=video")][0]
    assert m_video.endswith("SAVPF 96 97"), m_video
    assert "a=rtpmap:106" not in p.sdp and "a=rtcp-fb:106" not in p.sdp and "a=rtpmap:97 rtx/90000" in p.sdp
    assert [l for l in p.sdp.split("\r\n") if l.startswith("m=audio")][0].endswith("SAVPF 111")
    assert "a=ssrc-group:FID 2001 2002" in p.sdp and "a=fingerprint:sha-256" in p.sdp, "WebRTC lines were lost"


def test_h264_first_gets_h264_but_only_constrained_baseline_in_mode_1():
    p = prepare_offer(chrome("h264m0", "h264high", "h264cb", "rtx106", "vp8"))
    assert p.streams[1].payload_type == 106, "mode 0 / High profile H.264 was chosen: aiortc cannot send it"


def test_no_common_video_codec_is_refused_with_what_was_offered_and_what_is_taken():
    with pytest.raises(OfferError) as e:
        prepare_offer(chrome("h264m0", "av1"))
    assert e.value.status == 406
    assert "AV1" in e.value.reason and "VP8" in e.value.reason and "packetization-mode=1" in e.value.reason


@pytest.mark.parametrize("mangle, status, words", [
    (lambda s: s.replace("a=fingerprint:", "a=x-fingerprint:"), 400, "fingerprint"),
    (lambda s: s.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"), 400, "SAVPF"),
    (lambda s: s.replace("a=mid:1\r\n", ""), 400, "a=mid"),
    (lambda s: "v=0\r\nnonsense\r\n", 400, "malformed"),
    (lambda s: s.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9 UDP/TLS/RTP/SAVPF " + " ".join(map(str, range(30, 128)))), 400, "malformed"),
])
def test_offers_that_cannot_work_are_refused_with_a_reason(mangle, status, words):
    with pytest.raises(OfferError) as e:
        prepare_offer(mangle(chrome("vp8")))
    assert e.value.status == status and words in e.value.reason, e.value.reason


def test_end_of_candidates_without_candidates_is_dropped_so_checks_can_find_the_client():
    no_cands = chrome("vp8").replace("a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0\r\n",
                                     "a=end-of-candidates\r\n")
    p = prepare_offer(no_cands)
    assert p.candidates == 0 and "end-of-candidates" not in p.sdp
    with_cand = chrome("vp8").replace("a=ice-ufrag:abcd\r\n", "a=ice-ufrag:abcd\r\na=end-of-candidates\r\n", 1)
    assert "end-of-candidates" in prepare_offer(with_cand).sdp


def test_trickle_fragments_are_read_and_junk_is_refused():
    f = parse_sdpfrag("a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
                      "a=candidate:1 1 UDP 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n")
    assert (f.ufrag, f.candidates, f.end) == ("EsAw", [("0", "1 1 UDP 2130706431 127.0.0.1 40000 typ host")], True)
    for junk in ("a=candidate:1 1 UDP\r\n", "hello\r\n", "a=candidate:" + "1" * 2000):
        with pytest.raises(ValueError):
            parse_sdpfrag(junk)


def test_display_names_keep_vietnamese_and_lose_control_characters():
    assert clean_name("Xa\u0303 Phu\u0301 Tho\u0323\x07\u202e", "x") == "Xã Phú Thọ"
    assert clean_name("\x00\x1b", "WebRTC 127.0.0.1") == "WebRTC 127.0.0.1"
    assert len(clean_name("a" * 500, "x")) == 64


def test_a_self_signed_certificate_is_made_once_and_kept(tmp_path):
    c1 = tls.self_signed(tmp_path, ["127.0.0.1", "198.51.100.7"])
    assert c1.made_now and c1.self_signed and len(c1.fingerprint.split(":")) == 32
    assert stat.S_IMODE(os.stat(c1.key).st_mode) == 0o600, "the private key is readable by others"
    c2 = tls.self_signed(tmp_path, ["127.0.0.1"])
    assert not c2.made_now and c2.fingerprint == c1.fingerprint, "a restart made a new certificate"
    tls.ContextFactory(c2).getContext()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(c1.cert.read_bytes())
    ips = {str(i) for i in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
           .get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "198.51.100.7"} <= ips


def test_an_operators_key_that_is_not_the_certificates_is_refused(tmp_path):
    a = tls.self_signed(tmp_path / "a", [])
    b = tls.self_signed(tmp_path / "b", [])
    with pytest.raises(tls.TlsError, match="not the private key"):
        tls.load(a.cert, b.key)
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(tls.TlsError, match="not a PEM certificate"):
        tls.load(tmp_path / "junk.pem", a.key)


@pytest.mark.parametrize("text, words", [
    ("tls_cert: cert.pem\n", "tls_cert and tls_key go together"),
    ("ice_hosts: 10.0.0.1, router.local\n", "ice_hosts must list IP addresses"),
    ("ice_servers:\n  - urls: http://stun.example.vn\n", "is not a stun:"),
    ("ice_servers:\n  - urls: turn:turn.example.vn:3478\n", "needs username and credential"),
    ("ice_servers:\n  - urls: stun:x\n    colour: red\n", "unknown key 'colour'"),
    ("https_port: 99999\n", "https_port must be a port number"),
])
def test_webrtc_settings_are_checked_with_file_and_line(tmp_path, text, words):
    p = tmp_path / "cau.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert words in str(e.value) and str(p) in str(e.value), str(e.value)


def test_webrtc_settings_are_read(tmp_path):
    p = tmp_path / "cau.yaml"
    p.write_text("ice_hosts: [127.0.0.1, '::1']\nice_servers:\n  - stun:stun.example.vn:3478\n"
                 "  - {urls: 'turn:t.example.vn:3478', username: cau, credential: s3cret}\nstate_dir: st\n")
    s = load_settings(p)
    assert s.ice_hosts == ("127.0.0.1", "::1") and s.state_dir == tmp_path / "st"
    assert dict(s.ice_servers[1]) == {"urls": "turn:t.example.vn:3478", "username": "cau", "credential": "s3cret"}


def test_an_address_in_front_of_a_nat_is_offered_beside_the_host_candidate():
    from gateway.webrtc.hooks import is_local_address
    from gateway.webrtc.peer import add_mapped_candidates

    assert is_local_address("127.0.0.1") and not is_local_address("203.0.113.7")
    answer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
              "a=candidate:abc 1 udp 2130706431 10.21.0.5 50123 typ host\r\n"
              "a=candidate:abd 1 udp 2130706430 10.22.0.5 50124 typ host\r\n"
              "a=candidate:xyz 1 udp 1694498815 198.51.100.1 50123 typ srflx raddr 10.21.0.5 rport 50123\r\n"
              "a=end-of-candidates\r\n")
    out = add_mapped_candidates(answer, ("203.0.113.7",)).split("\r\n")
    mapped = [l for l in out if " 203.0.113.7 " in l]
    assert mapped == ["a=candidate:abcn0 1 udp 2130706430 203.0.113.7 50123 typ host"], mapped
    assert out.index(mapped[0]) == out.index("a=candidate:abc 1 udp 2130706431 10.21.0.5 50123 typ host") + 1


def test_gatekeeper_neighbours_are_read_and_checked(tmp_path):
    p = tmp_path / "cau.yaml"
    p.write_text("gatekeeper_neighbours: [192.0.2.10, 10.20.0.0/16]\n")
    assert load_settings(p).gatekeeper_neighbours == ("192.0.2.10", "10.20.0.0/16")
    p.write_text("gatekeeper_neighbours: national-gk\n")
    with pytest.raises(ConfigError, match=r"cau\.yaml:1:\d+: gatekeeper_neighbours must list addresses"):
        load_settings(p)


def test_more_than_one_audio_or_video_section_or_too_many_candidates_are_refused():
    two_video = chrome("vp8").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    video = two_video[two_video.index("m=video"):]
    with pytest.raises(OfferError, match="1 audio and 2 video sections"):
        prepare_offer(two_video + video.replace("a=mid:1", "a=mid:2"))
    many = chrome("vp8").replace("a=ice-ufrag:abcd\r\n", "a=ice-ufrag:abcd\r\n" + "".join(
        f"a=candidate:{i} 1 udp 2122260223 192.0.2.{i % 250} {40000 + i} typ host\r\n" for i in range(70)), 1)
    with pytest.raises(OfferError, match="lists 71 candidates; at most 64"):
        prepare_offer(many)


def test_non_ascii_digits_in_an_offer_are_a_400_not_a_crash():
    with pytest.raises(OfferError) as e:
        prepare_offer(chrome("vp8").replace("m=video 9 ", "m=video \u00b29 "))
    assert e.value.status == 400
    with pytest.raises(OfferError):
        prepare_offer(chrome("vp8").replace("SAVPF 96", "SAVPF \u0669\u0666"))   # Arabic-Indic digits


def test_plain_http_sends_a_browser_elsewhere_to_https_at_the_name_it_used():
    from types import SimpleNamespace

    from twisted.internet.address import IPv4Address
    from twisted.web.test.requesthelper import DummyRequest

    from gateway.api.http import SecureOnly

    gw = SimpleNamespace(https_port=lambda: 8443, advertised_host=lambda: "192.0.2.5")
    page = SecureOnly(gw, None)
    for host, want in ((b"cau.tinh.example.vn", "https://cau.tinh.example.vn:8443/join/6000"),
                       (b"evil.example/\r\nX: y", "https://192.0.2.5:8443/join/6000")):
        req = DummyRequest([b"6000"])
        req.uri = b"/join/6000"
        req.client = IPv4Address("TCP", "198.51.100.9", 40000)
        req.getRequestHostname = lambda h=host: h
        page.render(req)
        assert req.responseCode == 308 and req.responseHeaders.getRawHeaders(b"location") == [want.encode()]


def test_private_files_are_never_written_through_a_symlink(tmp_path):
    import os

    from gateway.files import write_private

    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    os.symlink(target, tmp_path / "api_token")
    write_private(tmp_path / "api_token", b"secret\n")
    assert target.read_text() == "keep me", "the write followed the symlink"
    assert (tmp_path / "api_token").read_bytes() == b"secret\n" and not (tmp_path / "api_token").is_symlink()
    assert stat.S_IMODE(os.stat(tmp_path / "api_token").st_mode) == 0o600


def test_pin_guesses_are_limited_per_subscriber_and_per_room():
    from gateway.webrtc.whip import PIN_TRIES, ROOM_PIN_TRIES, WebRtcService

    svc = WebRtcService(None)
    for i in range(PIN_TRIES):      # one IPv6 subscriber changing the last 64 bits
        svc.pin_failed(f"2001:db8:1:2::{i + 1}", "2000")
    assert svc.pin_refused("2001:db8:1:2::99", "2000"), "a new address in the same /64 is a new guesser"
    assert not svc.pin_refused("2001:db8:1:3::1", "2000") and not svc.pin_refused("198.51.100.1", "3000")
    for i in range(ROOM_PIN_TRIES):    # guesses spread over many addresses
        svc.pin_failed(f"198.51.100.{i + 1}", "4000")
    assert svc.pin_refused("203.0.113.50", "4000") and not svc.pin_refused("203.0.113.50", "3000")
