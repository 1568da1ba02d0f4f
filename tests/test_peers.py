"""The interop peers' wrappers work: the independent peers talk to EACH OTHER here
(no gateway involved), on loopback, with media where the peer does media.

A peer that is not installed makes these tests fail naming the package
(scripts/install-test-deps.sh installs them all).
"""
from __future__ import annotations

import time

import pytest

from interop_tests.peers.procs import PeerMissing, free_port, require_binary, wav_peak
from interop_tests.peers.sipp import localize_via, send_raw, status_code
from interop_tests.sip.conftest import (  # noqa: F401 - fixtures
    baresip_factory,
    pjsua_answerer,
    pjsua_call,
    sipp,
)


def test_missing_peer_names_the_package(monkeypatch):
    from interop_tests.peers import procs

    monkeypatch.setattr(procs.shutil, "which", lambda _name: None)
    with pytest.raises(PeerMissing, match=r"install sip-tester \(scripts/install-test-deps.sh\)"):
        require_binary("sipp")
    with pytest.raises(PeerMissing, match=r"install baresip-core"):
        require_binary("baresip")


# ------------------------------------------------------------------ sipp ↔ sipp
def test_sipp_builtin_uac_to_sipp_uas(sipp):
    uas = sipp.uas()
    r = sipp.uac(f"127.0.0.1:{uas.port}", calls=2, rate=20, call_ms=100, timeout=15)
    assert r.ok and r.successful == 2, r.explain()
    done = uas.stop()
    assert done.exit_code == 0 and done.successful == 2, done.explain()


def test_sipp_uac_audio_to_sipp_uas(sipp):
    uas = sipp.uas(rtp_echo=True)
    r = sipp.uac(f"127.0.0.1:{uas.port}", "uac_audio", service="8100", call_ms=500, timeout=15)
    assert r.ok, r.explain()
    assert "answer m=audio" in r.logs
    invite = [m for m in r.messages_log.split("\n\n") if "INVITE sip:8100@" in m]
    assert invite, r.messages_log[:2000]


def test_sipp_register_with_digest_against_sipp_registrar(sipp):
    reg = sipp.uas("uas_register_auth", keys={"user": "alice", "password": "s3cret"}, calls=1)
    r = sipp.uac(f"127.0.0.1:{reg.port}", "uac_register_auth", service="alice",
                 auth=("alice", "s3cret"), timeout=10)
    assert r.ok, r.explain()
    assert 'Authorization: Digest username="alice"' in r.messages_log
    reg.wait(5)
    # a wrong password is refused (403): the uac fails
    reg2 = sipp.uas("uas_register_auth", keys={"user": "alice", "password": "s3cret"}, calls=1)
    bad = sipp.uac(f"127.0.0.1:{reg2.port}", "uac_register_auth", service="alice",
                   auth=("alice", "wrong"), timeout=5)
    assert bad.exit_code != 0 and bad.received("SIP/2.0 403"), bad.explain()


# ------------------------------------------------------------------ sipp → baresip
def test_sipp_options_to_baresip(sipp, baresip_factory):
    b = baresip_factory("b")
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_options", service="b", timeout=10)
    [ok] = r.received("SIP/2.0 200")
    assert "Allow: INVITE" in ok
    # baresip 1.0 answers without Accept (a SHOULD of RFC 3261 11.2), and the
    # scenario, written for the gateway, says so
    assert "Accept:" not in ok
    assert r.exit_code != 0 and "header Accept: not found" in r.errors_log, r.explain()


def test_sipp_uac_audio_to_baresip(sipp, baresip_factory):
    b = baresip_factory("b", auto_answer=True, audio_codecs=["PCMU/8000/1"])
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_audio", service="b", call_ms=1500, timeout=15)
    assert r.ok, r.explain()
    b.wait_closed()
    st = b.rtp_stats()
    assert st and st.rx_packets > 40, st           # sipp's rtp_stream reached baresip
    freq, _ = wav_peak(b.received_audio())
    assert abs(freq - 1000) < 20, freq              # ... and it was sipp's 1 kHz tone


def test_sipp_cancel_to_ringing_baresip(sipp, baresip_factory):
    b = baresip_factory("b", auto_answer=False)     # rings, never answers
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_cancel", service="b", timeout=10)
    assert r.ok, r.explain()
    assert r.received("SIP/2.0 487")
    assert b.wait_closed(5) is not None


def test_sipp_hold_resume_against_baresip(sipp, baresip_factory):
    b = baresip_factory("b", auto_answer=True, audio_codecs=["PCMU/8000/1"])
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_reinvite_hold", service="b", call_ms=300,
                 timeout=15)
    assert r.ok, r.explain()


def test_sipp_late_offer_against_baresip(sipp, baresip_factory):
    b = baresip_factory("b", auto_answer=True, audio_codecs=["PCMU/8000/1"])
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_late_offer", service="b", call_ms=300,
                 timeout=15)
    assert r.ok, r.explain()


def test_sipp_no_common_codec_gets_488_from_baresip(sipp, baresip_factory):
    b = baresip_factory("b", auto_answer=True, audio_codecs=["PCMU/8000/1"])
    r = sipp.uac(f"127.0.0.1:{b.sip_port}", "uac_no_codec", service="b", timeout=10)
    assert r.ok, r.explain()


def test_send_raw_gets_a_status_line_from_baresip(baresip_factory):
    b = baresip_factory("b")
    msg = (b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKraw1\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
           b"Call-ID: raw1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert localize_via(msg, "127.0.0.1", 5).split(b"\r\n")[1] == \
        b"Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKraw1"
    line = send_raw("127.0.0.1", b.sip_port, msg, timeout=3, rewrite_via=True)
    assert status_code(line) == 200, line
    # nobody listening → None, quickly
    t = time.monotonic()
    assert send_raw("127.0.0.1", free_port(), msg, timeout=0.5) is None
    assert time.monotonic() - t < 2


# ------------------------------------------------------------------ baresip ↔ baresip
def test_baresip_calls_baresip_with_media(baresip_factory):
    b = baresip_factory("b", auto_answer=True, audio_source=("ausine", 1000))
    a = baresip_factory("a", audio_codecs=["G722/16000/1", "PCMU/8000/1"])
    a.dial(b.uri)
    a.wait_established()
    b.wait_established()
    time.sleep(1.5)
    a.hangup()
    assert a.wait_closed()
    b.wait_closed()
    sa, sb = a.rtp_stats(), b.rtp_stats()
    assert sa.rx_packets > 40 and sb.rx_packets > 40, (sa, sb)
    assert a.audio_codec()[0].startswith("G722")
    assert abs(wav_peak(a.received_audio())[0] - 1000) < 20   # a heard b's 1 kHz
    assert abs(wav_peak(b.received_audio())[0] - 440) < 20    # b heard a's 440 Hz


def test_baresip_registers_with_digest_at_sipp_registrar(sipp, baresip_factory):
    reg = sipp.uas("uas_register_auth", keys={"user": "carol", "password": "pw9"}, calls=1)
    c = baresip_factory("c", register_to=(f"127.0.0.1:{reg.port}", "carol", "pw9"))
    assert c.registered(timeout=10), c.event_types()
    assert reg.wait(5).successful == 1
    # baresip un-registers (same Call-ID) when it stops: nobody answers any more,
    # so it waits until stop()'s grace period ends; that is fine here


# ------------------------------------------------------------------ pjsua2
def test_pjsua_calls_baresip_with_media(baresip_factory, pjsua_call):
    b = baresip_factory("b", auto_answer=True, audio_codecs=["G722/16000/1", "PCMU/8000/1"])
    r = pjsua_call(b.uri, codecs=["PCMU"], tone=1000, seconds=2)
    assert r.confirmed and r.status_code == 200, r.raw.get("output", "")[-3000:]
    assert r.codec == "PCMU" and r.clock_rate == 8000
    assert r.exit_code == 0                         # pjsua2 released everything cleanly
    assert r.rx_packets > 40 and r.tx_packets > 40, r
    assert r.record_freq is not None and abs(r.record_freq - 440) < 20, r  # heard baresip
    b.wait_closed()
    assert abs(wav_peak(b.received_audio())[0] - 1000) < 20             # baresip heard pjsua


def test_pjsua_calls_sipp_uas(sipp, pjsua_call):
    uas = sipp.uas(rtp_echo=True)
    r = pjsua_call(f"sip:1000@127.0.0.1:{uas.port}", codecs=["PCMU"], tone=1000, seconds=1.5)
    assert r.confirmed, r.raw.get("output", "")[-3000:]
    assert r.codec == "PCMU"
    assert r.rx_packets > 20, r           # sipp echoed pjsua's RTP back
    assert abs(r.record_freq - 1000) < 20, r


def test_baresip_calls_pjsua_answerer(baresip_factory, pjsua_answerer):
    ans = pjsua_answerer(tone=700, codecs=["G722", "PCMU"])
    a = baresip_factory("a", audio_codecs=["G722/16000/1", "PCMU/8000/1"])
    a.dial(ans.uri)
    a.wait_established()
    time.sleep(1.5)
    a.hangup()
    a.wait_closed()
    [res] = ans.wait_calls(1)
    assert res.confirmed and res.codec == "G722" and res.rx_packets > 40, res
    assert a.rtp_stats().rx_packets > 40
    assert abs(wav_peak(a.received_audio())[0] - 700) < 20
