"""The gateway calls out (SIP UAC): real peers answer, real RTP flows, nothing leaks.

A SipUserAgent built like ``gateway.app`` builds it (loopback, ephemeral ports)
dials baresip (auto-answer), PJSIP (486), sipp (ringing for ever → CANCEL; a
digest challenge → retry with Authorization) and a port where nobody listens;
a room with ``cascade`` dials a baresip standing in for the national MCU.
"""
from __future__ import annotations

import logging
import random
import re
import socket
import time

import pytest

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import audio_leg
from gateway.dialplan import parse_dialplan
from gateway.media.codecs import MediaFormat
from gateway.media.rtp import open_rtp_session
from gateway.sip.dialout import DialFailed, OutgoingCall, dial, enable_cascade, parse_target
from gateway.sip.transaction import TransactionLayer
from gateway.sip.transport import Peer, SipTransport
from gateway.sip.ua import SipUserAgent
from interop_tests.peers.baresip import Baresip
from interop_tests.peers.pjsua import PjsuaAnswerer
from interop_tests.peers.procs import wav_peak
from interop_tests.peers.rtp_participant import RtpParticipant, spectrum_peak
from interop_tests.peers.sipp import Sipp
from tests.conftest import LOOP, free_port, run_for, wait

CAT = default_catalogue()

PLAN = """\
version: 1
rooms:
  - id: phong
    name: "Phòng thử"
    numbers: ["1000"]
  - id: tinh
    name: "Tỉnh"
    numbers: ["8000"]
    cascade: "0090001"
routes:
  - prefix: "00"
    dial: "sip:{{rest}}@127.0.0.1:{mcu_port}"
"""


class Gw:
    """The gateway's SIP side as app.py builds it, on loopback with ephemeral ports."""

    def __init__(self, mcu_port: int = 5060, T1: float = 0.05, tls_dir=None, plan: str = PLAN):
        self.plan = parse_dialplan(plan.format(mcu_port=mcu_port))
        tls = {}
        if tls_dir is not None:                  # SIP over TLS too, with a self-signed certificate
            from gateway.webrtc.tls import ContextFactory, self_signed

            tls = {"tls_port": 0, "tls_context": ContextFactory(self_signed(tls_dir, ["127.0.0.1"]))}
        self.transport = SipTransport("127.0.0.1", 0, **tls)
        self.transport.start()
        if tls:
            self.transport.start_tls()
        self.tx = TransactionLayer(self.transport, T1=T1, T4=1.0, timer_d=1.0)  # Timer K (T4) and D short: the tests wait for them
        base = random.randrange(10000, 30000, 2)  # below the kernel's ephemeral ports (peers use those)
        plane = media_plane((base, base + 199), grace_period=0.3, start_clock=True)  # as the app wires it
        self.plane = plane
        self.ports, self.clock, self.registry = plane.ports, plane.clock, plane.registry
        self.ua = SipUserAgent(self.tx, self.transport, lambda: self.plan, self.registry, self.ports, CAT,
                               media_bind="127.0.0.1")
        self.parts: list[RtpParticipant] = []

    def spec(self, room_id: str = "phong"):
        return self.plan.room(room_id)

    def participant(self, room_id: str = "phong", tone: float = 1000.0):
        """An independent RTP peer (PCMU) in the room, playing a tone."""
        c = CAT.get("PCMU")
        session = open_rtp_session(self.ports, clock_rate=8000, timeout=20)
        leg = audio_leg(session, MediaFormat(c, 0), display_name="participant")
        p = RtpParticipant("PCMU", 0, seed=len(self.parts))
        port = LOOP.run_until_complete(p.start())
        session.set_remote("127.0.0.1", port)
        p.set_remote("127.0.0.1", session.local_port)
        p.play_tone(tone, level_dbfs=-12)
        p.start_sending()
        self.parts.append(p)
        room = self.registry.join(self.spec(room_id), leg)
        return p, leg, room

    def close(self) -> None:
        self.ua.close_all("test over")
        self.registry.close_all("test over")
        for p in self.parts:
            p.stop_sending()
            p.close()
        run_for(0.2)
        self.tx.close()
        self.transport.stop()
        self.plane.stop()
        run_for(0.05)


@pytest.fixture
def gw():
    made: list[Gw] = []

    def make(**kw) -> Gw:
        g = Gw(**kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def poll(cond, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        run_for(step)
    return cond()


def failure_of(d) -> DialFailed:
    with pytest.raises(DialFailed) as info:
        wait(d, timeout=30)
    return info.value


# --------------------------------------------------------------------------- targets
def test_target_parsing():
    uri, peer = parse_target("sip:alice@127.0.0.1:5070")
    assert uri.user == "alice" and peer == Peer("UDP", "127.0.0.1", 5070)
    assert parse_target("sip:x@10.1.2.3;transport=tcp")[1] == Peer("TCP", "10.1.2.3", 5060)
    uri, _ = parse_target("sip:mcu@mcu.example.org")     # a name: dial() asks DNS (tests/test_dns.py)
    assert uri.host == "mcu.example.org"
    assert parse_target("sips:mcu@127.0.0.1")[1] == Peer("TLS", "127.0.0.1", 5061)
    assert parse_target("sip:mcu@10.1.2.3:5071;transport=tls")[1] == Peer("TLS", "10.1.2.3", 5071)
    with pytest.raises(DialFailed, match="TLS only"):
        parse_target("sips:mcu@127.0.0.1;transport=udp")
    with pytest.raises(DialFailed) as e:
        parse_target("h323:90001@127.0.0.1")
    assert e.value.status == 416


def test_a_host_name_fails_at_once_with_a_clear_reason_when_dns_is_off(gw):
    g = gw()
    assert g.ua.resolver is None
    exc = failure_of(dial(g.ua, "sip:mcu@mcu.example.org", g.spec()))
    assert exc.status == 503 and "DNS is off" in exc.reason
    assert g.ports.in_use == 0 and not g.tx.clients


# --------------------------------------------------------------------------- baresip answers
def test_dial_baresip_media_both_ways_then_bye_from_baresip(gw, tmp_path):
    b = Baresip("site", auto_answer=True, workdir=tmp_path / "baresip")
    try:
        g = gw()
        p, pleg, room = g.participant(tone=1000)
        d = dial(g.ua, b.uri, g.spec(), timeout=10)
        call = d.call
        leg = wait(d, timeout=15)
        assert isinstance(call, OutgoingCall) and call.state == "confirmed"
        assert leg.id in room.legs and leg.protocol == "sip" and leg.display_name == "site"
        assert g.ua.calls[call.dialog.call_id] is call and call.dialog.remote_tag
        b.wait_established(timeout=5)
        p.clear()
        run_for(3.0)
        freq, level = spectrum_peak(p.heard(1.5), p.rate)
        assert abs(freq - 440) < 20, f"the room heard {freq:.0f} Hz at {level:.1f} dBFS, not baresip's 440 Hz"
        in_use = g.ports.in_use
        assert in_use == 2  # participant + the dialed call
        b.hangup()
        assert poll(lambda: leg.state == "left", 10), "baresip's BYE did not end the leg"
        assert leg.id not in room.legs and call.state == "terminated"
        assert call.dialog.call_id not in g.ua.calls
        assert poll(lambda: g.ports.in_use == 1, 2), "the dialed call's RTP ports were not released"
        b.wait_closed(timeout=10)
        heard = b.received_audio()
        assert heard is not None, "baresip recorded nothing"
        freq, level = wav_peak(heard)
        assert abs(freq - 1000) < 20, f"baresip heard {freq:.0f} Hz at {level:.1f} dBFS, not the room's 1000 Hz"
    finally:
        b.stop()


def test_leg_hung_up_on_our_side_sends_bye(gw, tmp_path):
    b = Baresip("site2", auto_answer=True, workdir=tmp_path / "baresip")
    try:
        g = gw()
        leg = wait(dial(g.ua, b.uri, g.spec(), timeout=10), timeout=15)
        b.wait_established(timeout=5)
        leg.hangup("kicked by the operator")
        run_for(0.3)  # the BYE goes out and its 200 comes back
        b.wait_closed(timeout=10)
        assert not g.ua.calls and g.ports.in_use == 0
        assert b.event_types().count("CALL_CLOSED") == 1
        assert poll(lambda: not g.tx.clients, 5), f"transactions left: {g.tx.clients}"
    finally:
        b.stop()


# --------------------------------------------------------------------------- SRTP
def test_dialing_pjsip_over_tls_offers_sdes_keys_and_the_media_is_srtp(gw, tmp_path):
    """Our offer over TLS carries a=crypto; PJSIP with SRTP mandatory takes it: both sides hear
    each other and the leg shows TLS + SRTP."""
    a = PjsuaAnswerer(tls=True, srtp="mandatory", tone=440, codecs=["PCMU"])
    try:
        g = gw(tls_dir=tmp_path / "state")
        p, _, room = g.participant(tone=1000)
        d = dial(g.ua, a.tls_uri, g.spec(), timeout=10)
        leg = wait(d, timeout=15)
        assert d.call.offer.media[0].proto == "RTP/SAVP"
        assert leg.encryption == {"signalling": "TLS", "media": "SRTP AES_CM_128_HMAC_SHA1_80"}, leg.encryption
        p.clear()
        run_for(3.0)
        freq, level = spectrum_peak(p.heard(1.5), p.rate)
        assert abs(freq - 440) < 20, f"the room heard {freq:.0f} Hz at {level:.1f} dBFS, not PJSIP's 440 Hz"
        assert d.call.media.sessions["audio"].stats.srtp_failures == 0
        leg.hangup("test over")
        assert poll(lambda: len(a.results()) == 1, 10), "PJSIP did not see our BYE"
        [result] = a.results()
        assert result.confirmed and "Active" in result.raw.get("srtp", ""), result.raw
        assert result.rx_packets > 100
    finally:
        a.stop()


def test_a_site_without_srtp_gets_plain_rtp_unless_the_room_requires_encryption(gw, tmp_path):
    """PJSIP without SRTP refuses our RTP/SAVP offer (488): a room that only prefers encryption
    offers plain RTP once more and the call goes on; a room that requires it fails the dial."""
    a = PjsuaAnswerer(tls=True, tone=440, codecs=["PCMU"])
    try:
        g = gw(tls_dir=tmp_path / "state")
        d = dial(g.ua, a.tls_uri, g.spec(), timeout=10)
        leg = wait(d, timeout=15)
        assert d.call.plain_retry and d.call.offer.media[0].proto == "RTP/AVP"
        assert leg.encryption == {"signalling": "TLS", "media": None}
        leg.hangup("test over")
        run_for(0.5)
        exc = failure_of(dial(g.ua, a.tls_uri, g.spec(), timeout=10, encryption="required"))
        assert exc.status == 488, exc
        assert g.ports.in_use == 0 and not g.ua.calls
        exc = failure_of(dial(g.ua, a.uri, g.spec(), timeout=10, encryption="required"))   # over UDP
        assert exc.status == 488 and "only over TLS" in exc.reason, exc
    finally:
        a.stop()


# --------------------------------------------------------------------------- refusals
def test_pjsua_busy_is_dial_failed_486_and_nothing_leaks(gw):
    a = PjsuaAnswerer(answer_code=486, tone=None)
    try:
        g = gw()
        exc = failure_of(dial(g.ua, a.uri, g.spec(), timeout=10))
        assert exc.status == 486, exc
        assert g.ports.in_use == 0 and not g.ua.calls
        assert poll(lambda: not g.tx.clients, 3), f"transactions left: {g.tx.clients}"
    finally:
        a.stop()


def test_nobody_listening_times_out_408_and_the_transaction_ends(gw):
    g = gw()
    port = free_port("udp")
    t0 = time.monotonic()
    exc = failure_of(dial(g.ua, f"sip:void@127.0.0.1:{port}", g.spec(), timeout=1))
    assert exc.status == 408 and "no answer within 1 s" in exc.reason
    assert time.monotonic() - t0 < 3
    assert g.ports.in_use == 0 and not g.ua.calls
    # no provisional came, so no CANCEL may be sent (§9.1); Timer B (64*T1) ends the INVITE
    assert poll(lambda: not g.tx.clients, 5), f"transactions left: {g.tx.clients}"


RINGING_UAS = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="rings for ever, then takes the CANCEL">
  <recv request="INVITE"/>
  <send><![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:ring@[local_ip]:[local_port]>
      Content-Length: 0

  ]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <!-- the INVITE's CSeq: Cầu starts its dialogs at 1 -->
  <send><![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
</scenario>
"""


def test_ringing_without_answer_is_cancelled_408(gw, tmp_path):
    scenario = tmp_path / "uas_ring.xml"
    scenario.write_text(RINGING_UAS)
    sipp = Sipp(tmp_path / "sipp")
    try:
        uas = sipp.uas(str(scenario), calls=1, timeout=20)
        g = gw()
        exc = failure_of(dial(g.ua, f"sip:ring@127.0.0.1:{uas.port}", g.spec(), timeout=1.0))
        assert exc.status == 408 and "cancelled" in exc.reason
        assert g.ports.in_use == 0 and not g.ua.calls
        # the 487 is ACKed by the INVITE transaction, which ends after Timer D
        assert poll(lambda: not g.tx.clients, 5), f"transactions left: {g.tx.clients}"
        r = uas.wait(15)
        assert r.ok, r.explain()
        assert r.received("CANCEL"), "no CANCEL reached the far end"
    finally:
        sipp.close()


AUTH_UAS = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="challenges the INVITE, answers the authorised retry">
  <recv request="INVITE"/>
  <send><![CDATA[

      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag09[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="mcu-test", nonce="[pid]n[call_number]beef", algorithm=MD5, qop="auth"
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="[user]" password="[password]"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="goodauth"/>
  <send next="bad"><![CDATA[

      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag09[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <label id="goodauth"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag09[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:mcu@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=mcu 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <label id="bad"/>
  <Reference variables="authvalid"/>
</scenario>
"""


def test_digest_challenge_is_answered_once_and_the_call_succeeds(gw, tmp_path):
    scenario = tmp_path / "uas_auth.xml"
    scenario.write_text(AUTH_UAS)
    sipp = Sipp(tmp_path / "sipp")
    try:
        uas = sipp.uas(str(scenario), calls=1, timeout=20, keys={"user": "tinh", "password": "s3cret"})
        g = gw(T1=0.5)  # RFC 3261's T1: a stalled machine must not make us retransmit into the scenario
        d = dial(g.ua, f"sip:mcu@127.0.0.1:{uas.port}", g.spec(), timeout=10, credentials=("tinh", "s3cret"))
        call = d.call
        leg = wait(d, timeout=15)
        assert leg.audio.rx.codec.name == "PCMU" and call.auth_tried
        assert call.invite.cseq.seq == 2 and call.invite.call_id == call.call_id
        leg.hangup("test over")  # → BYE, which the scenario waits for
        # the BYE is answered: its transaction completes (and lingers Timer K = 5 s on UDP)
        assert poll(lambda: all(t.state in ("completed", "terminated")
                                for t in g.tx.clients.values() if t.method == "BYE"), 5)
        r = uas.wait(15)
        assert r.ok, r.explain()
        invites = r.received("INVITE")
        assert len(invites) == 2 and "Authorization: Digest" not in invites[0]
        assert 'username="tinh"' in invites[1] and "Authorization: Digest" in invites[1]
        acks = r.received("ACK")
        assert len(acks) == 2 and "Authorization: Digest" in acks[1], "the 2xx ACK lacks the INVITE's credentials"
        assert r.received("BYE")
        assert g.ports.in_use == 0 and not g.ua.calls
    finally:
        sipp.close()


def test_digest_without_credentials_fails_401(gw, tmp_path):
    scenario = tmp_path / "uas_auth.xml"
    scenario.write_text(AUTH_UAS)
    sipp = Sipp(tmp_path / "sipp")
    try:
        uas = sipp.uas(str(scenario), calls=1, timeout=20, keys={"user": "tinh", "password": "s3cret"})
        g = gw(T1=0.5)  # RFC 3261's T1: a stalled machine must not make us retransmit into the scenario
        exc = failure_of(dial(g.ua, f"sip:mcu@127.0.0.1:{uas.port}", g.spec(), timeout=5))
        assert exc.status == 401 and "credentials" in exc.reason
        assert g.ports.in_use == 0 and not g.ua.calls
    finally:
        sipp.close()


class RawUas:
    """A hand-driven UAS on a UDP socket: what it receives, and 2xx it sends when told."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.got: list[str] = []
        self.source = None

    def pump(self) -> list[str]:
        while True:
            try:
                data, self.source = self.sock.recvfrom(65535)
            except BlockingIOError:
                return self.got
            self.got.append(data.decode())

    def methods(self) -> list[str]:
        return [m.split(" ", 1)[0] for m in self.pump()]

    def ok(self, invite: str, tag: str) -> None:
        head = dict(re.findall(r"^(Via|From|To|Call-ID|CSeq): (.*?)\r$", invite, re.M))
        sdp = ("v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        msg = (f"SIP/2.0 200 OK\r\nVia: {head['Via']}\r\nFrom: {head['From']}\r\nTo: {head['To']};tag={tag}\r\n"
               f"Call-ID: {head['Call-ID']}\r\nCSeq: {head['CSeq']}\r\nContact: <sip:uas@127.0.0.1:{self.port}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        self.sock.sendto(msg.encode(), self.source)

    def close(self) -> None:
        self.sock.close()


def test_retransmitted_2xx_is_acked_again_and_a_second_fork_is_acked_and_hung_up(gw):
    uas = RawUas()
    try:
        g = gw()
        d = dial(g.ua, f"sip:uas@127.0.0.1:{uas.port}", g.spec(), timeout=5)
        assert poll(lambda: "INVITE" in uas.methods(), 3)
        invite = uas.got[0]
        uas.ok(invite, "fork1")
        leg = wait(d, timeout=3)
        assert poll(lambda: uas.methods().count("ACK") == 1, 2)
        uas.ok(invite, "fork1")  # our 200 "lost": the UAS retransmits it
        assert poll(lambda: uas.methods().count("ACK") == 2, 2), uas.methods()
        acks = [m for m in uas.got if m.startswith("ACK")]
        assert acks[0] == acks[1], "the re-sent ACK differs from the first"
        uas.ok(invite, "fork2")  # a second fork answers too: ACK it and hang it up (§13.2.2.4)
        assert poll(lambda: "BYE" in uas.methods(), 2), uas.methods()
        bye = next(m for m in uas.got if m.startswith("BYE"))
        assert "tag=fork2" in bye and uas.methods().count("ACK") == 3
        assert leg.state != "left" and len(g.ua.calls) == 1, "the first fork's call must go on"
        leg.hangup("test over")
        run_for(0.1)
        byes = [m for m in uas.pump() if m.startswith("BYE")]
        assert any("tag=fork1" in m for m in byes), "no BYE for the call that went on"
        assert g.ports.in_use == 0 and not g.ua.calls
    finally:
        uas.close()


# --------------------------------------------------------------------------- cascade
def test_a_room_with_cascade_dials_the_mcu_when_it_opens(gw, tmp_path):
    mcu = Baresip("90001", auto_answer=True, workdir=tmp_path / "mcu")
    try:
        g = gw(mcu_port=mcu.sip_port)
        cascade = enable_cascade(g.ua, g.registry, g.ua.plan, retry_delay=1.0)
        p, pleg, room = g.participant("tinh", tone=1000)
        assert room.id == "tinh"
        assert poll(lambda: len(room.legs) == 2, 15), f"the MCU leg did not appear: {room.legs}"
        mcu_leg = next(leg for leg in room.legs.values() if leg is not pleg)
        assert mcu_leg.protocol == "sip" and mcu_leg.display_name == "90001"
        mcu.wait_established(timeout=5)
        p.clear()
        run_for(2.5)
        freq, _ = spectrum_peak(p.heard(1.0), p.rate)
        assert abs(freq - 440) < 20, f"the room heard {freq:.0f} Hz from the MCU, not 440 Hz"
        # the last local participant leaves → the cascade call is hung up (BYE) → the room closes
        pleg.hangup("done")
        mcu.wait_closed(timeout=10)
        assert poll(lambda: g.registry.get("tinh") is None, 5), "the room did not close"
        assert poll(lambda: g.ports.in_use == 0, 2) and not g.ua.calls
        cascade.close()
    finally:
        mcu.stop()


def test_cascade_failures_are_logged_and_retried_a_bounded_number_of_times(gw, caplog):
    busy = PjsuaAnswerer(answer_code=486, tone=None)
    try:
        port = int(busy.uri.rsplit(":", 1)[1])
        g = gw(mcu_port=port)
        cascade = enable_cascade(g.ua, g.registry, g.ua.plan, retry_delay=0.5, max_attempts=2)
        states: list = []
        cascade.on_state = lambda *a: states.append(a)        # what raises the operator's alert
        with caplog.at_level(logging.WARNING, logger="cau.sip.dialout"):
            p, pleg, room = g.participant("tinh")
            assert poll(lambda: "giving up" in caplog.text, 15), caplog.text
        assert "486" in caplog.text and "retrying in 0.5 s" in caplog.text
        assert [(r, up) for r, _t, up, _w in states] == [("tinh", False), ("tinh", False)], states
        assert "retrying" in states[0][3] and "given up" in states[1][3] and "486" in states[1][3], states
        assert len(room.legs) == 1 and g.ports.in_use == 1
        assert len(busy.wait_calls(2, timeout=5)) == 2
        run_for(1.0)
        assert len(busy.results()) == 2, "dialed again after giving up"
        cascade.close()
    finally:
        busy.stop()


def test_never_acked_invites_are_capped(gw, monkeypatch):
    """Answered calls whose ACK never comes hold seats and ports: beyond the cap a new INVITE gets
    503 with Retry-After at once (per address the cap is 4; loopback counts only in the total,
    made 3 here), and a confirmed call frees its place."""
    import socket

    from gateway.sip import ua as ua_module

    monkeypatch.setattr(ua_module, "MAX_UNCONFIRMED", 3)
    g = gw()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.05)
    sdp = "v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    number = g.spec().numbers[0]
    answers = []
    try:
        for i in range(4):
            msg = (f"INVITE sip:{number}@127.0.0.1:{g.transport.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};rport;branch=z9hG4bKna{i}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:flood@127.0.0.1>;tag=f{i}\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: noack-{i}@lab\r\n"
                   f"CSeq: 1 INVITE\r\nContact: <sip:flood@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n"
                   f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
            s.sendto(msg, ("127.0.0.1", g.transport.port))
            final = None
            deadline = time.monotonic() + 3
            while final is None and time.monotonic() < deadline:
                run_for(0.02)
                try:
                    data = s.recv(65535).decode()
                except OSError:
                    continue
                if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1") and f"noack-{i}@lab" in data:
                    final = data
            answers.append(final.split("\r\n", 1)[0] if final else None)
            if final and final.startswith("SIP/2.0 503"):
                assert "Retry-After: 5" in final
    finally:
        s.close()
    assert [a.split()[1] if a else None for a in answers] == ["200", "200", "200", "503"], answers
