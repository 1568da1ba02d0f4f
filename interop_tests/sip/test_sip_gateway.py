"""SIP conformance: independent SIP stacks (sipp, baresip, PJSIP) call rooms on the target.

Each case names what an operator or a user would notice: the call completes,
the far end is refused with the right status and a reason, two different
devices in one room hear each other.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from interop_tests.verdicts import not_applicable

from interop_tests.peers.procs import wav_peak
from interop_tests.peers.sipp import send_raw, send_raw_files, status_code

SHARED = Path(__file__).resolve().parents[1] / "data" / "rfc4475"     # installed with the suite

# RFC 4475 §3.1.2: messages a UAS must reject; the gateway answers each with a 4xx/5xx reason.
INVALID_4475 = [
    "badinv01.dat", "clerr.dat", "scalar02.dat", "quotbal.dat", "ltgtruri.dat", "lwsruri.dat",
    "lwsstart.dat", "trws.dat", "escruri.dat", "baddate.dat", "regbadct.dat", "badaspec.dat",
    "baddn.dat", "badvers.dat", "mismatch01.dat", "mismatch02.dat", "ncl.dat", "insuf.dat", "multi01.dat",
    "mcl01.dat",
]


def hostport(target) -> str:
    return f"{target.host}:{target.sip_port}"


def options_request(target, call_id: str = "opt-1@127.0.0.1") -> bytes:
    return (
        f"OPTIONS sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{call_id.split('@')[0]}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:lab@127.0.0.1>;tag=1\r\n"
        f"To: <sip:{target.room}@{target.host}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_sipp_calls_into_a_room_complete(target, sipp):
    r = sipp.uac(hostport(target), "builtin:uac", calls=3, rate=10, service=target.room, call_ms=1500)
    assert r.ok and r.successful == 3, r.explain()


def test_sipp_audio_call_with_rtp_completes(target, sipp):
    r = sipp.uac(hostport(target), "uac_audio", service=target.room, call_ms=2000)
    assert r.ok, r.explain()


def _header(message: str, name: str) -> str | None:
    m = re.search(rf"(?im)^{name}:[ \t]*(.*)$", message.split("\n\n", 1)[0])
    return m.group(1).strip() if m else None


def test_options_answers_with_capabilities(target, sipp):
    r = sipp.uac(hostport(target), "uac_options", service=target.room)
    ok = r.received("SIP/2.0 200")
    assert ok, f"OPTIONS was answered {[m.splitlines()[0] for m in r.received('SIP/2.0')]} (expected 200)"
    allow, accept = _header(ok[0], "Allow"), _header(ok[0], "Accept")
    assert allow and "INVITE" in allow.upper(), f"the 200 lists Allow: {allow!r} (expected INVITE among them)"
    assert accept, "the 200 has no Accept header (RFC 3261 §11.2: it SHOULD list application/sdp)"
    assert r.ok, r.explain()


def test_cancel_before_answer_gets_487(target, sipp):
    r = sipp.uac(hostport(target), "uac_cancel", service=target.room)
    cancel_ok = [m for m in r.received("SIP/2.0 200") if re.search(r"(?im)^CSeq:\s*\d+\s+CANCEL", m)]
    invite_ok = [m for m in r.received("SIP/2.0 200") if re.search(r"(?im)^CSeq:\s*\d+\s+INVITE", m)]
    if invite_ok and not r.received("SIP/2.0 487"):
        not_applicable("the target answered the INVITE before the CANCEL reached it (it answers at once): "
                       "there was no ringing call to cancel")
    assert cancel_ok, ("the CANCEL got no 200 (RFC 3261 §9.2: a CANCEL matching a transaction is answered 200); "
                       f"answers seen: {[m.splitlines()[0] for m in r.received('SIP/2.0')]}")
    assert r.received("SIP/2.0 487"), "no 487 Request Terminated for the cancelled INVITE"
    assert r.ok, r.explain()


def test_late_offer_invite_without_sdp(target, sipp):
    r = sipp.uac(hostport(target), "uac_late_offer", service=target.room, call_ms=1000)
    assert r.ok, r.explain()


def test_reinvite_hold_and_resume(target, sipp):
    r = sipp.uac(hostport(target), "uac_reinvite_hold", service=target.room, call_ms=500)
    assert r.ok, r.explain()


def test_no_common_codec_is_488_with_reason(target, sipp):
    r = sipp.uac(hostport(target), "uac_no_codec", service=target.room)
    assert r.ok, r.explain()
    (resp,) = r.received("SIP/2.0 488")[:1]
    if target.is_local_cau:     # Cầu names what was offered and what it takes; others need only say 488
        assert "G729" in resp or "codec" in resp.lower()


def test_unknown_number_is_404_and_barred_number_403(target):
    inv = options_request(target).replace(b"OPTIONS", b"INVITE")
    for number, code in (("777777", 404), ("19001", 403)):
        data = inv.replace(f"sip:{target.room}@".encode(), f"sip:{number}@".encode())
        data = data.replace(b"branch=z9hG4bKopt-1", f"branch=z9hG4bKinv{number}".encode())
        data = data.replace(b"opt-1@", f"inv-{number}@".encode())
        line = send_raw(target.host, target.sip_port, data, timeout=3)
        assert status_code(line) == code, line


def test_full_room_refuses_the_third_caller_with_486(cau, sipp):
    r = sipp.uac(hostport(cau), "builtin:uac", calls=3, rate=50, service="4000", call_ms=3000)
    assert r.successful == 2 and r.failed == 1, r.explain()
    assert r.received("SIP/2.0 486"), "the third caller was not told the room is full (486)"


def test_rfc4475_malformed_requests_get_an_error_and_the_gateway_keeps_serving(target):
    if not SHARED.is_dir():
        pytest.fail(f"RFC 4475 messages not found at {SHARED} (they are installed with the suite)")
    statuses = send_raw_files(target.host, target.sip_port, [SHARED / n for n in INVALID_4475], timeout=2,
                              rewrite_via=True)
    bad = {name: line for name, line in statuses.items() if status_code(line) not in range(400, 600)}
    assert not bad, f"not answered with 4xx/5xx: {bad}"
    assert status_code(statuses["badvers.dat"]) == 505
    # a request with Max-Forwards 0 is legal and processed by an endpoint (RFC 4475 zeromf)
    assert status_code(send_raw(target.host, target.sip_port, (SHARED / "zeromf.dat").read_bytes(), timeout=2,
                                rewrite_via=True)) == 200
    line = send_raw(target.host, target.sip_port, options_request(target, "after-4475@127.0.0.1"), timeout=3)
    assert status_code(line) == 200, "the gateway stopped answering after the torture messages"


def test_baresip_and_pjsua_in_one_room_hear_each_other(target, baresip_factory, pjsua_call, tmp_path):
    b = baresip_factory("bare", audio_codecs=("opus/48000/2", "G722/16000/1", "PCMU/8000/1"), audio_source=("ausine", 440))
    b.dial(target.uri(target.room))
    b.wait_established(timeout=15)
    wav = tmp_path / "pjsua-heard.wav"
    result = pjsua_call(target.uri(target.room), codecs=["G722"], tone=1000, seconds=4, record=wav)
    b.hangup()
    b.wait_closed(timeout=10)
    assert result.confirmed, result.error or result.reason
    assert result.codec and "G722" in result.codec.upper()
    assert result.rx_packets > 100, f"PJSIP received {result.rx_packets} RTP packets"
    freq, level = wav_peak(wav)
    assert abs(freq - 440) < 20, f"PJSIP heard {freq:.0f} Hz at {level:.1f} dBFS, not baresip's 440 Hz"
    time.sleep(0.5)
    heard = b.received_audio()
    assert heard is not None, "baresip recorded nothing"
    freq, level = wav_peak(heard)
    assert abs(freq - 1000) < 20, f"baresip heard {freq:.0f} Hz at {level:.1f} dBFS, not PJSIP's 1000 Hz"


def test_a_sender_of_30ms_packets_is_heard_as_one_unbroken_tone(target, sipp, pjsua_call, tmp_path):
    # sipp offers a=ptime:30 and sends 30 ms PCMU packets of a 1 kHz tone (from a pcap),
    # whatever the gateway's answer asks for; PJSIP, in the same room on PCMU, must hear
    # it as a listener would want: the tone, continuous, without gaps or jumps
    import threading

    import numpy as np

    done: dict = {}
    caller = threading.Thread(target=lambda: done.setdefault(
        "r", sipp.uac(hostport(target), "uac_audio_30ms", service=target.room, call_ms=5000)))
    caller.start()
    try:
        time.sleep(0.5)
        wav = tmp_path / "pjsua-heard.wav"
        result = pjsua_call(target.uri(target.room), codecs=["PCMU"], tone=None, seconds=3.5, record=wav)
    finally:
        caller.join(30)
    r = done.get("r")
    assert r is not None and r.ok, r.explain() if r else "sipp did not finish"
    assert result.confirmed, result.error or result.reason
    freq, level = wav_peak(wav, skip_seconds=0.5)
    assert abs(freq - 1000) < 10, f"PJSIP heard {freq:.0f} Hz at {level:.1f} dBFS, not sipp's 1000 Hz"
    import wave

    with wave.open(str(wav), "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")[::w.getnchannels()].astype(np.float64)
    # 2 s from the middle of what PJSIP heard, in 20 ms blocks: without re-framing every
    # third block is silent. (sipp's pcap player on a busy machine can stall for 100 ms
    # and more, which PJSIP then hears as a dip: so look for unbroken stretches.)
    mid = pcm[int(1.0 * rate):int(3.0 * rate)]
    blk = rate // 50
    blocks = mid[:len(mid) // blk * blk].reshape(-1, blk)
    rms_db = 20 * np.log10(np.sqrt(np.mean(blocks ** 2, axis=1)) / 32768 + 1e-9)
    good = np.abs(rms_db - np.median(rms_db)) <= 3
    assert good.mean() >= 0.6, f"only {good.sum()} of {len(good)} blocks of 20 ms have the tone's level"
    best_start, best_len, run = 0, 0, 0
    for k, g in enumerate(good):
        run = run + 1 if g else 0
        if run > best_len:
            best_start, best_len = k - run + 1, run
    assert best_len >= 25, f"the longest stretch of steady tone is {best_len * 20} ms (gaps every few blocks?)"
    # ...and in it, 200 ms at a time, ONE sinusoid: samples lost or repeated would break
    # the fit (a late packet from sipp may leave a concealed frame: most, not all)
    x = mid[best_start * blk:(best_start + best_len) * blk]
    seg = rate // 5
    t = np.arange(seg) / rate
    fits = []
    for k in range(len(x) // seg):
        y = x[k * seg:(k + 1) * seg]
        residual = min(np.sum((y - b @ np.linalg.lstsq(b, y, rcond=None)[0]) ** 2)
                       for f in np.arange(freq - 3, freq + 3.01, 0.5)
                       for b in [np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)])
        fits.append(residual / np.sum(y ** 2) < 0.05)
    assert sum(fits) >= 0.75 * len(fits), f"{sum(fits)} of {len(fits)} stretches of 200 ms are one clean tone"


def test_baresip_registers_with_digest_authentication(cau, baresip_factory):
    b = baresip_factory("baresip-a", register_to=(hostport(cau), "baresip-a", cau.users["baresip-a"]))
    assert b.registered(timeout=10), "baresip did not register: " + b.proc.tail()


def test_pin_room_admits_after_the_pin_by_sip_info(cau, sipp):
    digits = {f"d{i + 1}": d for i, d in enumerate(cau.pin)}
    r = sipp.uac(hostport(cau), "uac_pin_info", service=cau.pin_room, call_ms=1500, keys=digits)
    assert r.ok, r.explain()
    assert re.search(r"room locked: leg-\d+ joined", cau.log()), "the caller never joined the PIN room"


def test_three_wrong_pins_end_the_call(cau, sipp):
    r = sipp.uac(hostport(cau), "uac_pin_wrong", service=cau.pin_room, timeout=30)
    assert r.ok, r.explain()
    assert "wrong PIN entered 3 times" in cau.log()


def test_a_registered_endpoint_is_called_by_its_number(cau, baresip_factory, pjsua_call, tmp_path):
    b = baresip_factory("baresip-a", auto_answer=True, audio_source=("ausine", 440),
                        register_to=(hostport(cau), "baresip-a", cau.users["baresip-a"]))
    assert b.registered(timeout=10), "baresip did not register"
    wav = tmp_path / "pjsua-heard.wav"
    # the caller is a site too (pjsua-b, not registered): PJSIP answers the INVITE's digest challenge
    result = pjsua_call(cau.uri("5001"), codecs=["PCMU"], tone=1000, seconds=4, record=wav,
                        user="pjsua-b", password=cau.users["pjsua-b"])
    assert result.confirmed, result.error or result.reason
    freq, level = wav_peak(wav)
    assert abs(freq - 440) < 20, f"the caller heard {freq:.0f} Hz at {level:.1f} dBFS, not the callee's 440 Hz"
    b.wait_closed(timeout=10)
    heard = b.received_audio()
    assert heard is not None
    freq, level = wav_peak(heard)
    assert abs(freq - 1000) < 20, f"the callee heard {freq:.0f} Hz at {level:.1f} dBFS, not the caller's 1000 Hz"


def test_calling_an_unregistered_endpoint_says_so(cau, pjsua_call):
    """A site (pjsua-b, proving its password on the INVITE) calling another that is not registered
    hears why; an anonymous caller is not told whether the site exists."""
    result = pjsua_call(cau.uri("5001"), codecs=["PCMU"], seconds=1, timeout=10,
                        user="pjsua-b", password=cau.users["pjsua-b"])
    assert not result.confirmed and result.status_code == 480, (result.status_code, result.reason)
    assert "not registered" in result.reason, result.reason
    inv = options_request(cau).replace(b"OPTIONS", b"INVITE")
    data = inv.replace(f"sip:{cau.room}@".encode(), b"sip:5002@").replace(b"opt-1", b"inv-5002")
    line = send_raw(cau.host, cau.sip_port, data, timeout=5)
    assert status_code(line) == 403 and "registered" not in line, line


def test_baresip_offering_h264_video_gets_video_negotiated(cau, baresip_factory):
    """Video signalling is ready: an H.264 (packetization-mode 0) offer is answered with H.264."""
    b = baresip_factory("video", audio_codecs=("G722/16000/1",), video_codecs=("H264",),
                        video_source=("fakevideo", "nil"))
    b.dial(cau.uri(cau.room))
    b.wait_established(timeout=15)
    time.sleep(1.0)
    b.hangup()
    b.wait_closed(timeout=10)
    out = b.proc.output
    # baresip sets its encoder and decoder from our SDP answer
    assert "Set video encoder: H264 packetization-mode=0" in out, out[-2000:]
    assert "Set video decoder: H264 packetization-mode=0" in out, out[-2000:]
    assert "Set audio encoder: G722" in out


def _exchange(target, sock, data: bytes, want: str, timeout: float = 3.0) -> str:
    """Send a request from ``sock`` and return the first response whose status starts with ``want``."""
    sock.sendto(data, (target.host, target.sip_port))
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            text = sock.recv(65535).decode("utf-8", "replace")
        except OSError:
            break
        seen.append(text.split("\r\n", 1)[0])
        if text.startswith("SIP/2.0 " + want):
            return text
    raise AssertionError(f"no {want} response; got {seen}")


def test_session_timers_rfc4028(target, sip_caps):
    import socket

    if not sip_caps.offers("timer"):
        not_applicable("the target's OPTIONS answer does not list 'timer' in Supported")

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

    sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"

    def invite(call_id: str, se: str, branch: str) -> bytes:
        return (f"INVITE sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:lab@127.0.0.1>;tag=st1\r\nTo: <sip:{target.room}@{target.host}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:lab@127.0.0.1:{port}>\r\n"
                f"Supported: timer\r\nSession-Expires: {se}\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()

    try:
        r = _exchange(target, s, invite("st-small@lab", "30", "st1"), "422")
        assert re.search(r"(?im)^Min-SE:\s*(\d+)", r) and int(re.search(r"(?im)^Min-SE:\s*(\d+)", r).group(1)) > 30
        ok = _exchange(target, s, invite("st-ok@lab", "120;refresher=uac", "st2"), "200")
        assert re.search(r"(?im)^Session-Expires:\s*120;refresher=uac", ok), ok
        assert re.search(r"(?im)^Require:.*timer", ok), ok
        to = re.search(r"(?im)^To:\s*(.+)$", ok).group(1).strip()
        for method, cseq, want in (("ACK", 1, None), ("BYE", 2, "200")):
            msg = (f"{method} sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKst{method}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:lab@127.0.0.1>;tag=st1\r\nTo: {to}\r\nCall-ID: st-ok@lab\r\n"
                   f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()
            if want:
                _exchange(target, s, msg, want)
            else:
                s.sendto(msg, (target.host, target.sip_port))
    finally:
        s.close()


def test_sipp_registers_with_digest_and_a_wrong_password_is_refused(cau, sipp):
    r = sipp.uac(hostport(cau), "uac_register_auth", service="pjsua-b", auth=("pjsua-b", cau.users["pjsua-b"]))
    assert r.ok, r.explain()
    bad = sipp.uac(hostport(cau), "uac_register_auth", service="pjsua-b", auth=("pjsua-b", "not-the-password"))
    assert not bad.ok and bad.received("SIP/2.0 403"), bad.explain()


def _raw_invite(target, port: int, call_id: str, sdp: str, branch: str) -> bytes:
    return (f"INVITE sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:lab@127.0.0.1>;tag=lab1\r\nTo: <sip:{target.room}@{target.host}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:lab@127.0.0.1:{port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def test_an_unusable_media_address_is_488_and_holds_no_ports(cau):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        r = _exchange(cau, s, _raw_invite(cau, s.getsockname()[1], "badaddr@lab", sdp, "badaddr"), "488")
        assert "pbx.example.com" in r.split("\r\n", 1)[0] or "Warning" in r
    finally:
        s.close()
    time.sleep(0.3)
    assert cau.status()["media"]["rtp_ports_in_use"] == 0


def test_bye_before_the_answer_ends_the_invite_with_487(cau):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        ringing = _exchange(cau, s, _raw_invite(cau, port, "earlybye@lab", sdp, "eb1"), "180")
        to = re.search(r"(?im)^To:\s*(.+)$", ringing).group(1).strip()
        bye = (f"BYE sip:{cau.room}@{cau.host}:{cau.sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKeb2\r\nMax-Forwards: 70\r\n"
               f"From: <sip:lab@127.0.0.1>;tag=lab1\r\nTo: {to}\r\nCall-ID: earlybye@lab\r\n"
               "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
        _exchange(cau, s, bye, "487")  # the INVITE's final answer (the BYE's 200 may come first or after)
    finally:
        s.close()


def _invite(target, call_id: str, sdp: str, extra: str = "") -> bytes:
    return (f"INVITE sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:lab@127.0.0.1>;tag=h1\r\nTo: <sip:{target.room}@{target.host}>\r\n"
            f"Call-ID: {call_id}@lab\r\nCSeq: 1 INVITE\r\nContact: <sip:lab@127.0.0.1:9>\r\n{extra}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def test_an_offer_with_thousands_of_formats_is_refused_at_once_and_calls_go_on(target, sipp):
    """8,000 payload types in one m= line fit in a 25 kB UDP INVITE; negotiating them one by one
    froze a gateway for minutes (every room's audio with it). It gets a 400/488 saying why, at once,
    and the next caller is answered as usual."""
    head = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    pts = " ".join(str(i % 128) for i in range(8000))
    sdp = head + f"m=audio 4000 RTP/AVP {pts}\r\n" + "".join(f"a=rtpmap:{i % 128} X{i}/8000\r\n" for i in range(600))
    data = _invite(target, "many-formats", sdp)
    assert len(data) > 20000
    line = send_raw(target.host, target.sip_port, data, timeout=5)
    assert status_code(line) in (400, 488) and "formats" in line, line
    # a long but bounded offer (60 formats, 1,500 attribute lines) is answered promptly too
    pts = " ".join(str(96 + i % 32) for i in range(60))
    sdp = (head + f"m=audio 4000 RTP/AVP 0 {pts}\r\na=rtpmap:0 PCMU/8000\r\n"
           + "".join(f"a=rtpmap:{96 + i % 32} X{i}/8000\r\n" for i in range(1500)))
    line = send_raw(target.host, target.sip_port, _invite(target, "long-offer", sdp), timeout=5)
    assert status_code(line) in (200, 180, 183), line
    cancel = (f"CANCEL sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKlong-offer\r\nMax-Forwards: 70\r\n"
              f"From: <sip:lab@127.0.0.1>;tag=h1\r\nTo: <sip:{target.room}@{target.host}>\r\n"
              f"Call-ID: long-offer@lab\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()
    send_raw(target.host, target.sip_port, cancel, timeout=2)
    r = sipp.uac(hostport(target), "builtin:uac", service=target.room, call_ms=500)
    assert r.ok, r.explain()


def test_a_header_with_a_bare_cr_or_lf_and_a_huge_session_expires_get_400(target):
    sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    for n, bad in enumerate(("Subject: one\rtwo\r\n", "Subject: one\ntwo\r\n")):
        data = _invite(target, f"bare-crlf-{n}", sdp, extra=bad)
        line = send_raw(target.host, target.sip_port, data, timeout=3)
        assert status_code(line) == 400, (bad, line)
    data = _invite(target, "huge-se", sdp, extra="Supported: timer\r\nSession-Expires: " + "9" * 400 + "\r\n")
    line = send_raw(target.host, target.sip_port, data, timeout=3)
    assert status_code(line) == 400 and "Session-Expires" in line, line


@pytest.mark.parametrize("name, status", [
    ("unkscm.dat", 416),      # §3.3.2: OPTIONS to a URI scheme we do not know
    ("novelsc.dat", 416),     # §3.3.3: likewise (soap.beep:)
    ("bext01.dat", 420),      # §3.3.5: Require: an extension we do not have
    ("unksm2.dat", 400),      # §3.3.4: REGISTER whose To is not a SIP URI
    ("sdp01.dat", 406),       # §3.3.15: an INVITE whose Accept excludes application/sdp
])
def test_rfc4475_requests_get_the_answer_the_rfc_gives(target, name, status):
    line = send_raw(target.host, target.sip_port, (SHARED / name).read_bytes(), timeout=3, rewrite_via=True)
    assert status_code(line) == status, f"{name}: {line}"


def test_a_never_acked_invite_does_not_make_the_gateway_a_reflector(target):
    """An INVITE naming someone else's address in its SDP, never ACKed: the 2xx is retransmitted
    for 32 s, but the media sent there stays within half a second's worth (it was 674 times the
    INVITE's size; ACKed calls, and peers whose RTP comes, get their media all along — the rest of
    the suite)."""
    import socket

    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.settimeout(0.2)
    port = victim.getsockname()[1]
    sdp = ("v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    data = _invite(target, "reflect", sdp)
    try:
        line = send_raw(target.host, target.sip_port, data, timeout=5)
        assert status_code(line) == 200, line
        got = 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                got += len(victim.recv(4096))
            except OSError:
                pass
        # half a second of PCMU (25 packets of 172 bytes) at most: ~10 times the INVITE, not 674
        assert got <= 30 * 172, f"{got} bytes of media went to an address no ACK confirmed ({len(data)}-byte INVITE)"
    finally:
        victim.close()
        bye = (f"BYE sip:{target.room}@{target.host}:{target.sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKreflect-bye\r\nMax-Forwards: 70\r\n"
               f"From: <sip:lab@127.0.0.1>;tag=h1\r\nTo: <sip:{target.room}@{target.host}>\r\n"
               f"Call-ID: reflect@lab\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
        send_raw(target.host, target.sip_port, bye, timeout=1)


def test_a_refusal_does_not_reveal_where_a_dial_out_number_leads(cau):
    """The suite's plan routes "8…" out to the national MCU (h323:{rest}@192.0.2.10); a caller is
    refused without learning that target (it was in the 403's reason phrase)."""
    sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    data = _invite(cau, "dial-out-secret", sdp).replace(f"sip:{cau.room}@".encode(), b"sip:8123@")
    line = send_raw(cau.host, cau.sip_port, data, timeout=3)
    assert status_code(line) == 403, line
    assert "192.0.2.10" not in line and "h323:" not in line, line
    assert "routes out to h323:123@192.0.2.10" in cau.log()       # the operator's log says it


def test_register_does_not_tell_which_endpoints_exist(target):
    """An unknown user and a real endpoint of the plan get the same answer to REGISTER without
    credentials: a digest challenge (RFC 3261 §22.1), nothing that names or denies the account."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    answers = []
    try:
        for user in ("pjsua-b", "no-such-commune-42"):
            msg = (f"REGISTER sip:{target.host}:{target.sip_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKreg{user}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:{user}@{target.host}>;tag=r1\r\nTo: <sip:{user}@{target.host}>\r\n"
                   f"Call-ID: reg-{user}@lab\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            r = _exchange(target, s, msg, "4")
            answers.append((r.split("\r\n", 1)[0], sum(1 for l in r.split("\r\n") if l.lower().startswith("www-authenticate:"))))
    finally:
        s.close()
    assert answers[0][0].startswith("SIP/2.0 401") and answers[0] == answers[1], answers


def test_a_claimed_identity_is_checked_before_it_counts(cau):
    """The From header only claims a site. Claiming a site that has a password gets a digest
    challenge (a wrong answer a 403); an anonymous caller may not ring a site through the gateway,
    and the refusal names no target."""
    import socket

    sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        claim = _invite(cau, "claim-1", sdp).replace(b"From: <sip:lab@", b"From: \"UBND\" <sip:baresip-a@")
        r = _exchange(cau, s, claim, "401")
        ch = next(l.split(":", 1)[1].strip() for l in r.split("\r\n") if l.lower().startswith("www-authenticate:"))
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', ch))
        uri = f"sip:{cau.room}@{cau.host}:{cau.sip_port}"
        wrong = (f'Digest username="baresip-a", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{uri}", '
                 f'response="{"0" * 64}", algorithm={p["algorithm"]}, qop=auth, nc=00000001, cnonce="c1", '
                 f'opaque="{p["opaque"]}"')
        again = claim.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(b"bKclaim-1", b"bKclaim-2") \
            .replace(b"Content-Type:", f"Authorization: {wrong}\r\nContent-Type:".encode())
        _exchange(cau, s, again, "403")
        anon = _invite(cau, "ring-site", sdp).replace(f"sip:{cau.room}@".encode(), b"sip:5001@")
        r = _exchange(cau, s, anon, "403")
        assert "127.0.0.1:" not in r.split("\r\n", 1)[0], r
    finally:
        s.close()
    assert "the caller is not a known endpoint" in cau.log()


def test_baresip_registers_and_calls_over_tls(cau, baresip_factory):
    """SIP over TLS (RFC 3261 §26): baresip registers with digest over TLS and calls a room; the
    gateway answers on the same connection and the call is the site itself in the roster."""
    import json
    import urllib.request

    if cau.sip_tls_port is None:
        pytest.fail("the gateway did not report 'SIP over TLS listening on HOST:PORT/tls'")
    tls = f"{cau.host}:{cau.sip_tls_port}"
    b = baresip_factory("baresip-a", auto_answer=True,
                        register_to=(f"{tls};transport=tls", "baresip-a", cau.users["baresip-a"]))
    assert b.registered(timeout=10), "baresip did not register over TLS"
    b.dial(f"sip:{cau.room}@{tls};transport=tls")
    b.wait_established(timeout=10)

    def identities() -> list:   # (earlier cases' never-ACKed calls may still be in the room)
        with urllib.request.urlopen(f"http://{cau.host}:{cau.http_port}/api/status", timeout=5) as r:
            return [p["identity"] for room in json.loads(r.read())["rooms"] for p in room["roster"]]

    deadline = time.monotonic() + 5
    while identities().count("baresip-a") != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert identities().count("baresip-a") == 1, identities()
    b.hangup()
    b.wait_closed(timeout=10)
    deadline = time.monotonic() + 5
    while "baresip-a" in identities() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "baresip-a" not in identities()


def _srtp_rows(pcap, display: str, home) -> list[list[str]]:
    """The captured G.711 SRTP packets matching ``display``: (udp.length, data) rows, each 12 + 160 + 10
    octets long (the 80-bit authentication tag), at least 100 of them."""
    import os
    import subprocess

    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", display, "-T", "fields", "-e", "udp.length",
                          "-e", "data.data"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(home)})
    rows = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert len(rows) > 100, out.stdout[-2000:] + out.stderr
    assert {int(n) for n, _ in rows} == {8 + 12 + 160 + 10}, sorted({n for n, _ in rows})
    return rows


def test_baresip_with_mandatory_srtp_over_tls_meets_a_plain_caller_and_the_wire_carries_no_audio(
        cau, baresip_factory, tmp_path):
    """SDES SRTP (RFC 4568 keys over TLS, AES_CM_128_HMAC_SHA1_80): baresip with srtp-mand and a
    plain-RTP baresip hear each other in one room; on the wire the encrypted caller's RTP carries
    an authentication tag and no trace of its 440 Hz tone (μ-law would show it in the clear)."""
    import json
    import urllib.request

    from interop_tests.peers.capture import LoopbackCapture
    from interop_tests.peers.rtp_participant import band_level_db, noise_floor_db, ulaw_to_pcm

    tls = f"{cau.host}:{cau.sip_tls_port}"
    a = baresip_factory("baresip-a", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 440),
                        register_to=(f"{tls};transport=tls", "baresip-a", cau.users["baresip-a"]),
                        media_encryption="srtp-mand")
    b = baresip_factory("plain", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 1000))
    assert a.registered(timeout=10)
    pcap = tmp_path / "srtp.pcap"
    with LoopbackCapture(f"udp portrange {a.rtp_lo}-{a.rtp_hi}", pcap):
        a.dial(f"sip:{cau.room}@{tls};transport=tls")
        a.wait_established(timeout=10)
        b.dial(cau.uri(cau.room))
        b.wait_established(timeout=10)
        time.sleep(3.0)
        with urllib.request.urlopen(f"http://{cau.host}:{cau.http_port}/api/status", timeout=5) as r:
            roster = [p for room in json.loads(r.read())["rooms"] for p in room["roster"]]
        a.hangup()
        b.hangup()
        a.wait_closed(timeout=10)
        b.wait_closed(timeout=10)
    enc = {p["name"]: p["encryption"] for p in roster}
    assert enc["baresip-a"] == {"signalling": "TLS", "media": "SRTP AES_CM_128_HMAC_SHA1_80"}, enc
    assert enc["plain"] == {"signalling": "UDP", "media": None}, enc
    freq, level = wav_peak(a.received_audio())
    assert abs(freq - 1000) < 20, f"the SRTP caller heard {freq:.0f} Hz at {level:.1f} dBFS, not 1000 Hz"
    freq, level = wav_peak(b.received_audio())
    assert abs(freq - 440) < 20, f"the plain caller heard {freq:.0f} Hz at {level:.1f} dBFS, not 440 Hz"
    # the wire: RTP from baresip-a's ports is 12 + 160 + 10 octets (the 80-bit tag; RTCP is shorter)
    rows = _srtp_rows(pcap, f"udp.srcport >= {a.rtp_lo} and udp.srcport <= {a.rtp_hi} and udp.length > 100",
                      tmp_path)
    payload = ulaw_to_pcm(b"".join(bytes.fromhex(d)[12:12 + 160] for _, d in rows[10:110]))
    # how far the tone stands above the noise floor (ciphertext read as μ-law is loud noise that can
    # reach -30 dBFS in any band; a readable tone stands 40 dB and more above it)
    above = band_level_db(payload, 8000, 440) - noise_floor_db(payload, 8000)
    assert above < 20, f"the 440 Hz tone stands {above:.0f} dB above the noise on the wire: readable"


def test_pjsip_over_tls_with_mandatory_srtp_hears_the_room_and_its_rtp_is_encrypted(
        cau, baresip_factory, pjsua_call, tmp_path):
    """A second, independent SRTP stack: PJSIP (pjsua2) calls over TLS with SRTP mandatory and
    keys only on a secure hop; it and a plain baresip hear each other, the roster shows its
    protection, and its packets on the wire are G.722 plus an 80-bit tag with no clear tone."""
    import json
    import threading
    import urllib.request

    from interop_tests.peers.capture import LoopbackCapture
    from interop_tests.peers.procs import free_port_block

    b = baresip_factory("plain", audio_codecs=("G722/16000/1",), audio_source=("ausine", 440))
    b.dial(cau.uri(cau.room))
    b.wait_established(timeout=10)
    rtp_lo = free_port_block(8)
    pcap = tmp_path / "pjsip-srtp.pcap"
    wav = tmp_path / "pjsua-heard.wav"
    roster: list = []

    def look():                       # the roster while PJSIP is in the room
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{cau.host}:{cau.http_port}/api/status", timeout=5) as r:
                entries = [p for room in json.loads(r.read())["rooms"] for p in room["roster"]]
            if any(p["encryption"]["signalling"] == "TLS" for p in entries):
                roster[:] = entries
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=look)
    with LoopbackCapture(f"udp portrange {rtp_lo}-{rtp_lo + 7}", pcap):
        watcher.start()
        result = pjsua_call(f"sip:{cau.room}@{cau.host}:{cau.sip_tls_port};transport=tls", codecs=["G722"],
                            tone=1000, seconds=4, record=wav, tls=True, srtp="mandatory", rtp_port=rtp_lo)
        watcher.join()
    b.hangup()
    b.wait_closed(timeout=10)
    assert result.confirmed, result.raw.get("output", "")[-3000:]
    assert result.codec == "G722" and result.rx_packets > 100, result
    assert "AES_CM_128_HMAC_SHA1_80" in result.raw.get("srtp", ""), result.raw.get("srtp")
    assert result.record_freq is not None and abs(result.record_freq - 440) < 20, \
        f"PJSIP heard {result.record_freq} Hz at {result.record_dbfs} dBFS, not the room's 440 Hz"
    freq, level = wav_peak(b.received_audio())
    assert abs(freq - 1000) < 20, f"baresip heard {freq:.0f} Hz at {level:.1f} dBFS, not PJSIP's 1000 Hz"
    enc = [p["encryption"] for p in roster if p["encryption"]["signalling"] == "TLS"]
    assert enc == [{"signalling": "TLS", "media": "SRTP AES_CM_128_HMAC_SHA1_80"}], roster
    _srtp_rows(pcap, f"udp.srcport == {rtp_lo}", tmp_path)     # its RTP port (RTCP is on the next)
