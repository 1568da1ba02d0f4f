"""H.323 calls into rooms, in-process: Cầu's H.323 service and the H.323 test endpoint on loopback.

Real TCP (H.225.0 call signalling, separate H.245), real UDP RTP with real
codecs (the test endpoint's media is the suite's independent RTP peer), the
real room mixer.  What is asserted is what a participant notices: the call
connects, the room shows it, tones are heard both ways, the PIN admits, the
release carries the cause.
"""
from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import audio_leg
from gateway.dialplan import load_dialplan
from gateway.h323 import q931
from gateway.h323.call import parse_destination
from gateway.h323.endpoint import H323Service
from gateway.h323.gatekeeper import Gatekeeper
from gateway.h323.tpkt import TpktFramer, tpkt_frame
from gateway.media.codecs import MediaFormat
from gateway.media.rtp import open_rtp_session
from interop_tests.h323.endpoint import H323TestEndpoint
from interop_tests.peers.rtp_participant import RtpParticipant, band_level_db, wait_for_tone
from interop_tests.peers.capture import LoopbackCapture
from tests.conftest import LOOP, run_for

CAT = default_catalogue()
PLAN = load_dialplan(Path(__file__).resolve().parent.parent / "interop_tests" / "dialplan.yaml")


def run(coro, timeout: float = 20.0):
    return LOOP.run_until_complete(asyncio.wait_for(coro, timeout))


class Gw:
    """Cầu's H.323 side with its own rooms and ports."""

    def __init__(self) -> None:
        # below the kernel's ephemeral ports (32768.. by default), where the peers' sockets land
        base = random.randrange(10000, 32000, 2)
        plane = media_plane((base, base + 199), grace_period=0.2, start_clock=True)  # as the app wires it
        self.plane = plane
        self.ports, self.clock, self.registry = plane.ports, plane.clock, plane.registry
        self.svc = H323Service(lambda: PLAN, self.registry, self.ports, CAT, bind="127.0.0.1",
                               advertise="127.0.0.1", rtp_timeout=10.0)
        self.svc.start(0)
        self.parts: list[RtpParticipant] = []
        self.legs = []
        self.endpoints: list[H323TestEndpoint] = []

    async def rtp_participant(self, room: str = "open", codec: str = "PCMU", pt: int = 0, tone: float | None = None):
        """A plain RTP leg in ``room`` (an independent RTP peer behind it)."""
        c = CAT.get(codec)
        session = open_rtp_session(self.ports, clock_rate=c.clock_rate, timeout=10)
        leg = audio_leg(session, MediaFormat(c, pt), dtmf_pt=101, display_name=f"rtp-{codec}")
        p = RtpParticipant(codec, pt)
        port = await p.start()
        session.set_remote("127.0.0.1", port)
        p.set_remote("127.0.0.1", session.local_port)
        self.registry.join(PLAN.room(room), leg)
        if tone:
            p.play_tone(tone, level_dbfs=-12)
        p.start_sending()
        self.parts.append(p)
        self.legs.append(leg)
        return p, leg

    def endpoint(self, *args, **kw) -> H323TestEndpoint:
        ep = H323TestEndpoint(*args, **kw)
        self.endpoints.append(ep)
        return ep

    def h323_legs(self, room: str) -> list:
        r = self.registry.get(room)
        return [] if r is None else [leg for leg in r.legs.values() if leg.protocol == "h323"]

    def close(self) -> None:
        for ep in self.endpoints:
            run(ep.close())
        for leg in self.legs:
            leg.hangup("test over")
        for p in self.parts:
            p.close()
        self.registry.close_all("test over")
        run(asyncio.sleep(0.1))
        LOOP.run_until_complete(self.svc.stop().asFuture(LOOP))
        run_for(0.2)
        self.plane.stop()


@pytest.fixture
def gw():
    g = Gw()
    yield g
    g.close()
    assert g.svc.calls == {}, f"calls left over: {g.svc.calls}"
    assert g.ports.in_use == 0, f"{g.ports.in_use} RTP port pairs leaked"


MODES = {
    "fast-start+tunnelling": dict(fast_start=True, tunnelling=True),
    "tunnelling, no fast start": dict(fast_start=False, tunnelling=True),
    "separate H.245, no tunnelling": dict(fast_start=False, tunnelling=False),
    "fast start + separate H.245 offered in Setup": dict(fast_start=True, tunnelling=False, separate_h245=True),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_call_in_each_h245_mode_joins_the_room_and_tones_are_heard_both_ways(gw, mode):
    async def scenario():
        p, _ = await gw.rtp_participant("open", "PCMU", 0, tone=500)
        ep = gw.endpoint("lab-vsx", profile="VSX", tone_hz=1000, **MODES[mode])
        call = await ep.call("1000", "127.0.0.1", gw.svc.port)
        await ep.wait_media()
        assert call.state == "connected"
        legs = gw.h323_legs("open")
        assert len(legs) == 1 and legs[0].audio.rx.codec.name == "G722"
        gcall = next(iter(gw.svc.calls.values()))
        expected = "tunnelled" if MODES[mode]["tunnelling"] else "separate"
        await asyncio.sleep(0.3)
        assert gcall.h245_mode == expected and gcall.h245.ready, (gcall.h245_mode, gcall.h245.ready)
        assert gcall.fast_start == ("active" if MODES[mode]["fast_start"] else "none")
        ep.clear()
        p.clear()
        assert await wait_for_tone(ep.heard, ep.rx_rate, 500, -25) > -25, "the H.323 endpoint does not hear the room"
        assert await wait_for_tone(p.heard, p.rate, 1000, -25) > -25, "the room does not hear the H.323 endpoint"
        assert band_level_db(ep.heard(0.6), ep.rx_rate, 1000) < -45, "the endpoint hears itself"
        # the endpoint hangs up: EndSessionCommand + RELEASE COMPLETE; the leg leaves, ports come back
        await ep.hangup()
        await asyncio.sleep(0.3)
        assert gw.h323_legs("open") == [] and gw.svc.calls == {}
        assert gcall.cause == 16 and gcall.released_by == "remote"
        assert gw.ports.in_use == 1      # only the plain RTP participant's pair

    run(scenario())


def test_hdx_with_g711_preference_sends_pcmu_and_still_hears_the_room(gw):
    async def scenario():
        p, _ = await gw.rtp_participant("open", "PCMA", 8, tone=700)
        ep = gw.endpoint("lab-hdx", profile="HDX", audio_codec_pref="PCMU", tone_hz=1000, fast_start=False)
        await ep.call("open", "127.0.0.1", gw.svc.port)     # an h323-ID alias, not digits
        await ep.wait_media()
        leg = gw.h323_legs("open")[0]
        assert leg.audio.rx.codec.name == "PCMU"
        assert await wait_for_tone(ep.heard, ep.rx_rate, 700, -25) > -25
        assert await wait_for_tone(p.heard, p.rate, 1000, -25) > -25

    run(scenario())


def test_dtmf_pin_by_user_input_indication_admits_to_the_pin_room(gw):
    async def scenario():
        ep = gw.endpoint("lab-g711", profile="G711", tunnelling=True, fast_start=True)
        await ep.call("2000", "127.0.0.1", gw.svc.port)
        await ep.wait_media()
        for _ in range(30):     # 0.5 s of the prompt heard (not 0.5 s of wall time: the machine may stall)
            await asyncio.sleep(0.1)
            if len(ep.heard()) >= ep.rx_rate // 2:
                break
        assert gw.registry.get("locked") is None, "joined before the PIN"
        # the PIN prompt (523 then 784 Hz) is heard while waiting
        assert band_level_db(ep.heard(), ep.rx_rate, 784) > -35
        ep.send_dtmf("2468#")
        for _ in range(40):
            await asyncio.sleep(0.1)
            if gw.h323_legs("locked"):
                break
        assert len(gw.h323_legs("locked")) == 1, "the right PIN did not admit the caller"

    run(scenario())


def test_the_gateway_ending_the_call_sends_release_complete_and_frees_ports(gw):
    async def scenario():
        ep = gw.endpoint("lab-vsx", profile="VSX", fast_start=False)
        await ep.call("1000", "127.0.0.1", gw.svc.port)
        await ep.wait_media()
        gw.registry.close("open", "the operator closed the room")
        await ep.wait_released(5)
        assert ep.release_cause == 16
        assert ep.call_obj.released_by == "remote"
        await asyncio.sleep(0.2)
        assert gw.svc.calls == {} and gw.ports.in_use == 0

    run(scenario())


@pytest.mark.parametrize("number,cause", [("5555", 1), ("1999", 21)])
def test_unknown_or_barred_numbers_are_released_with_the_cause(gw, number, cause):
    async def scenario():
        ep = gw.endpoint("lab-vsx", profile="VSX")
        with pytest.raises(RuntimeError, match=f"cause {cause}"):
            await ep.call(number, "127.0.0.1", gw.svc.port)
        assert ep.release_cause == cause
        assert gw.svc.calls == {}

    run(scenario())


def test_a_full_room_refuses_with_user_busy(gw):
    async def scenario():
        for i in range(2):
            await gw.rtp_participant("tiny", "PCMU", 0)
        ep = gw.endpoint("lab-vsx", profile="VSX")
        with pytest.raises(RuntimeError, match="cause 17"):
            await ep.call("4000", "127.0.0.1", gw.svc.port)

    run(scenario())


def _raw(port: int, payload: bytes, framed: bool = True) -> tuple[list[bytes], bool]:
    """Send bytes on a fresh call signalling connection; (TPKT payloads received, closed by the gateway)."""
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(tpkt_frame(payload) if framed else payload)
        await writer.drain()
        data = b""
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(4096), 3)
                if not chunk:
                    break
                data += chunk
        except asyncio.TimeoutError:
            writer.close()
            return TpktFramer().feed(data), False
        writer.close()
        return TpktFramer().feed(data), True

    return run(go())


def test_malformed_input_is_released_with_a_cause_and_the_service_keeps_answering(gw):
    # a SETUP whose user-user IE is not PER: RELEASE COMPLETE cause 100, connection closed
    bad_uu = q931.Q931Message(q931.MessageType.SETUP, 77, False,
                              [q931.InformationElement(q931.IE.USER_USER, b"\x05\xff\xff\xff\x00")])
    got, closed = _raw(gw.svc.port, bad_uu.encode())
    assert closed
    rc = q931.decode(got[0])
    assert rc.message_type == q931.MessageType.RELEASE_COMPLETE and rc.call_reference == 77
    assert rc.from_destination and rc.cause.value == 100
    # garbage that is not Q.931: cause 95 (no call reference known: closed all the same)
    got, closed = _raw(gw.svc.port, b"\x42\x00\x01\x02")
    assert closed
    assert not got or q931.decode(got[0]).cause.value == 95
    # broken TPKT framing: the connection is closed
    _, closed = _raw(gw.svc.port, b"\x07\x00\x00\x10garbage-garbage", framed=False)
    assert closed
    # a SETUP without the user-user IE: 96 mandatory information element missing
    got, closed = _raw(gw.svc.port, q931.Q931Message(q931.MessageType.SETUP, 5, False, []).encode())
    assert closed and q931.decode(got[0]).cause.value == 96
    assert gw.svc.calls == {}

    async def then_a_good_call():
        ep = gw.endpoint("lab-vsx", profile="VSX")
        await ep.call("1000", "127.0.0.1", gw.svc.port)
        await ep.wait_media()
        assert len(gw.h323_legs("open")) == 1

    run(then_a_good_call())


def test_status_enquiry_is_answered_with_the_call_state(gw):
    async def scenario():
        ep = gw.endpoint("lab-vsx", profile="VSX")
        call = await ep.call("1000", "127.0.0.1", gw.svc.port)
        call._send(q931.build_status_enquiry(call.call_ref, call.call_id, from_destination=False))
        await asyncio.sleep(0.2)
        assert "STATUS" in call.received and call.state == "connected"

    run(scenario())


@pytest.mark.parametrize("answerer", ["fast start + tunnelling", "no fast start, no tunnelling"])
def test_outgoing_dial_from_cau_reaches_an_answering_endpoint_with_audio(gw, answerer):
    plain = answerer.startswith("no")
    async def scenario():
        p, _ = await gw.rtp_participant("open", "PCMU", 0, tone=500)
        ep = gw.endpoint("lab-hdx", profile="HDX", tone_hz=1000, fast_start=not plain, tunnelling=not plain)
        port = await ep.listen()
        d = gw.svc.dial(f"lab-hdx@127.0.0.1:{port}", PLAN.room("open"))
        leg = await asyncio.wait_for(d.asFuture(LOOP), 10)
        assert leg.protocol == "h323" and leg in gw.registry.get("open").legs.values()
        incoming = await asyncio.wait_for(ep.incoming.get(), 2)
        assert incoming.dialed == "lab-hdx"
        out = next(c for c in gw.svc.calls.values() if c.role == "caller")
        # Cầu offered fast start + tunnelling; a plain answerer makes it fall back to H.245 on
        # the separate connection the answerer offers in Connect
        assert (out.fast_start, out.h245_mode) == (("refused", "separate") if plain else ("active", "tunnelled"))
        assert await wait_for_tone(ep.heard, ep.rx_rate, 500, -25) > -25
        assert await wait_for_tone(p.heard, p.rate, 1000, -25) > -25
        await ep.hangup()
        await asyncio.sleep(0.3)
        assert gw.h323_legs("open") == []

    run(scenario())


def test_dial_destinations_are_parsed():
    assert parse_destination("h323:1000@10.0.0.5") == ("1000", "10.0.0.5", 1720)
    assert parse_destination("room@127.0.0.1:1820") == ("room", "127.0.0.1", 1820)


def test_dialing_a_closed_port_fails_the_deferred(gw):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = gw.svc.dial(f"x@127.0.0.1:{port}", PLAN.room("open"))
    with pytest.raises(ConnectionError, match="cause 27"):
        run(d.asFuture(LOOP))
    run(asyncio.sleep(0.1))


def test_a_dialled_endpoint_that_never_answers_is_released_after_the_timeout(gw):
    # the far end takes the TCP connection and the Setup and then says nothing (a room
    # system left ringing): the dial fails with "no answer", nothing is left behind
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        t0 = time.monotonic()
        d = gw.svc.dial(f"ringing@127.0.0.1:{port}", PLAN.room("open"), timeout=1.0)
        with pytest.raises(ConnectionError, match="cause 19"):
            run(d.asFuture(LOOP))
        assert 0.9 < time.monotonic() - t0 < 5
        run(asyncio.sleep(0.1))
        assert gw.svc.calls == {} and gw.h323_legs("open") == []
    finally:
        srv.close()


def test_a_call_through_the_gatekeeper(gw):
    gk = Gatekeeper(lambda: PLAN, call_signal_address=("127.0.0.1", gw.svc.port))
    gk.start("127.0.0.1", 0)

    async def scenario():
        p, _ = await gw.rtp_participant("open", "PCMU", 0, tone=500)
        ep = gw.endpoint("lab-gk", number="7001", profile="VSX", tone_hz=1000)
        eid = await ep.register(("127.0.0.1", gk.port))
        assert eid
        await ep.call("1000")                   # ARQ → ACF (gatekeeper-routed to Cầu) → SETUP
        assert ep.admission.call_model == "gatekeeperRouted"
        assert ep.admission.dest_call_signal_address == ("127.0.0.1", gw.svc.port)
        await ep.wait_media()
        assert await wait_for_tone(p.heard, p.rate, 1000, -25, window=0.5) > -25
        assert len(gw.h323_legs("open")) == 1
        await ep.close()

    try:
        run(scenario())
    finally:
        gk.stop()
        run_for(0.1)


@pytest.mark.parametrize("tunnelling", [True, False], ids=["tunnelled H.245", "separate H.245 connection"])
def test_tshark_decodes_the_call_without_errors(gw, tmp_path, tunnelling):
    pcap = tmp_path / "h323.pcapng"
    port = gw.svc.port
    # the separate H.245 connection runs between ephemeral ports: capture all of loopback's TCP
    # for the call's few seconds and judge only what decodes as Q.931/H.225/H.245
    with LoopbackCapture(f"tcp port {port}" if tunnelling else "tcp", pcap):

        async def scenario():
            ep = gw.endpoint("lab-vsx", profile="VSX", fast_start=False, tunnelling=tunnelling)
            await ep.call("1000", "127.0.0.1", port)
            await ep.wait_media()
            await asyncio.sleep(0.3)
            await ep.hangup()

        run(scenario())
        run_for(0.3)        # the last answers
    # No "-d tcp.port==PORT,tpkt": in tshark 4.0 "tpkt" names two dissectors and the first one
    # decodes nothing; Q.931-over-TPKT is found by tshark's heuristics on any port.
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y",
                          "q931 || h225 || h245"],
                         capture_output=True, text=True, timeout=60).stdout
    bad = subprocess.run(["tshark", "-r", str(pcap), "-Y",
                          f"(tcp.port=={port} || h245 || h225 || q931) && (_ws.malformed || _ws.expert.severity >= error)"],
                         capture_output=True, text=True, timeout=60).stdout
    assert not bad.strip(), f"tshark found malformed/erroneous packets:\n{bad}"
    text = out.lower()
    for what in ("setup", "connect", "terminalcapabilityset", "openlogicalchannel", "releasecomplete"):
        assert what in text.replace(" ", "").replace("-", ""), f"{what} not seen by tshark:\n{out}"


def test_a_connection_that_never_sends_setup_is_closed(gw, monkeypatch):
    import socket as _socket

    from gateway.h323 import call as call_mod

    monkeypatch.setattr(call_mod, "SETUP_WAIT", 0.3)
    s = _socket.create_connection(("127.0.0.1", gw.svc.port), timeout=5)
    try:
        run(asyncio.sleep(0.8))
        s.settimeout(2)
        assert s.recv(100) == b"", "the gateway kept a silent connection open"
    finally:
        s.close()
    run(asyncio.sleep(0.1))
    assert not gw.svc.calls
