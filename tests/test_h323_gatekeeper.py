"""The built-in gatekeeper on real UDP (loopback): what an H.323 endpoint sees in the RAS answers."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol

from gateway.dialplan import parse_dialplan
from gateway.h323 import ras
from gateway.h323.gatekeeper import Gatekeeper
from gateway.h323.ras import RasMessage
from interop_tests.peers.capture import LoopbackCapture
from tests.conftest import run_for, wait

PLAN_TEXT = """
version: 1
rooms:
  - id: tinh
    name: "Phòng họp UBND tỉnh"
    numbers: ["8000", "tinh"]
templates:
  - id: "huyen-{nn}"
    name: "Phòng họp huyện {nn}"
routes:
  - pattern: "81{nn:2}"
    where: {nn: "01-20"}
    template: "huyen-{nn}"
  - prefix: "00"
    dial: "h323:{rest}@192.0.2.10"
  - prefix: "19"
    reject: {status: 403, reason: "service numbers"}
endpoints:
  - alias: xa-an-binh
    number: "8101001"
    protocol: h323
    networks: ["127.0.0.0/8"]
  - alias: xa-xa-xoi
    number: "8101002"
    protocol: h323
    networks: ["10.21.0.0/16"]
  - alias: sip-phone
    protocol: sip
  - alias: hdx-pw
    number: "8101003"
    protocol: h323
    password: "mat-khau"
  - alias: mcu-huyen
    number: "8109000"
    protocol: h323
    prefixes: ["5"]
"""
# the lab case: anyone on loopback may register under aliases the plan does not use
PLAN = parse_dialplan(PLAN_TEXT + 'open_registration: ["127.0.0.0/8"]\n', "gk-test.yaml")
CLOSED = parse_dialplan(PLAN_TEXT, "gk-closed.yaml")

CAU_CS = ("127.0.0.1", 1720)
CONF = bytes(range(16))
CALL = bytes(range(16, 32))


class Endpoint(DatagramProtocol):
    """A RAS endpoint on a real UDP socket: sends requests, collects what the gatekeeper sends."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.inbox: list[RasMessage] = []
        self._waiting: dict[int, defer.Deferred] = {}
        self.host = host
        self.port = reactor.listenUDP(0, self, interface=host)
        self.address = (host, self.port.getHost().port)
        self.seq = 100

    def datagramReceived(self, data: bytes, addr) -> None:  # noqa: N802
        m = ras.parse_ras(data)
        self.inbox.append(m)
        d = self._waiting.pop(m.seq, None)
        if d is not None and not m.kind.endswith("Request"):
            d.callback(m)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def ask(self, data: bytes, gk: Gatekeeper) -> RasMessage:
        seq = ras.parse_ras(data).seq
        d = self._waiting[seq] = defer.Deferred()
        self.port.write(data, ("127.0.0.1", gk.port))
        return wait(d, timeout=3)

    def register(self, gk: Gatekeeper, aliases, ttl: int | None = 300, cs=None) -> RasMessage:
        return self.ask(ras.build_rrq(self.next_seq(), [cs or self.call_signal], [self.address], aliases=aliases,
                                      time_to_live=ttl, endpoint_kind="terminal"), gk)

    @property
    def call_signal(self):
        return (self.host, self.address[1] + 1 if self.address[1] < 65535 else 1720)

    def close(self) -> None:
        wait(defer.maybeDeferred(self.port.stopListening))


@pytest.fixture
def gk():
    g = Gatekeeper(lambda: PLAN, gatekeeper_id="cau-gk", call_signal_address=CAU_CS, max_bandwidth=20480,
                   expiry_grace=0)
    g.start("127.0.0.1", 0)
    yield g
    wait(g.stop())


@pytest.fixture
def ep():
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture
def ep2():
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture
def rogue():
    """Another host on the network (127.0.0.2)."""
    e = Endpoint("127.0.0.2")
    yield e
    e.close()


def test_discovery_gcf_and_grj_for_another_gatekeeper(gk: Gatekeeper, ep: Endpoint) -> None:
    gcf = ep.ask(ras.build_grq(ep.next_seq(), ep.address, aliases=[("h323-ID", "hdx")]), gk)
    assert gcf.kind == "gatekeeperConfirm" and gcf.gatekeeper_identifier == "cau-gk"
    assert gcf.ras_addresses == [("127.0.0.1", gk.port)]
    grj = ep.ask(ras.build_grq(ep.next_seq(), ep.address, gatekeeper_identifier="national"), gk)
    assert grj.kind == "gatekeeperReject" and grj.reject_reason == "terminalExcluded"
    # discovery tells nothing about which endpoints exist or where they may register from
    gcf = ep.ask(ras.build_grq(ep.next_seq(), ep.address, aliases=[("h323-ID", "xa-xa-xoi")]), gk)
    assert gcf.kind == "gatekeeperConfirm"
    assert not gk.multicast_listening      # multicast discovery is off by default


def test_registration_from_allowed_network(gk: Gatekeeper, ep: Endpoint) -> None:
    rcf = ep.register(gk, [("h323-ID", "xa-an-binh"), ("dialedDigits", "8101001")], ttl=600)
    assert rcf.kind == "registrationConfirm"
    assert rcf.time_to_live == 300                  # min(asked 600, ours 300)
    assert rcf.gatekeeper_identifier == "cau-gk" and rcf.endpoint_identifier
    assert rcf.aliases == [("h323-ID", "xa-an-binh"), ("dialledDigits", "8101001")]
    reg = gk.registrations[rcf.endpoint_identifier]
    assert reg.endpoint_spec is not None and reg.endpoint_spec.alias == "xa-an-binh"
    assert reg.call_signal_addresses == [ep.call_signal] and reg.ras_address == ep.address
    assert gk.by_alias("8101001") is reg and gk.by_alias("XA-AN-BINH") is reg
    # asked for less than ours: granted what was asked
    assert ep.register(gk, [("h323-ID", "xa-an-binh")], ttl=60).time_to_live == 60


def test_registration_rejects(gk: Gatekeeper, ep: Endpoint, ep2: Endpoint) -> None:
    # the plan says xa-xa-xoi lives in 10.21.0.0/16, not on loopback: by alias and by number
    for alias in [("h323-ID", "xa-xa-xoi"), ("dialedDigits", "8101002")]:
        rrj = ep.register(gk, [alias])
        assert rrj.kind == "registrationReject" and rrj.reject_reason == "securityDenial"
    assert ep.register(gk, [("h323-ID", "sip-phone")]).reject_reason == "securityDenial"
    # no call signalling address
    rrj = ep.ask(ras.build_rrq(ep.next_seq(), [], [ep.address], aliases=[("h323-ID", "x")]), gk)
    assert rrj.reject_reason == "invalidCallSignalAddress"
    # an alias another endpoint holds, or a room number
    assert ep.register(gk, [("h323-ID", "hdx-hg")]).kind == "registrationConfirm"
    rrj = ep2.register(gk, [("h323-ID", "HDX-HG"), ("dialedDigits", "5000")])
    assert rrj.reject_reason == "duplicateAlias"
    assert rrj.value["rejectReason"][1] == [("h323-ID", "HDX-HG")]
    assert ep2.register(gk, [("dialedDigits", "8000")]).reject_reason == "duplicateAlias"
    assert len(gk.registrations) == 1 and gk.stats["rejects"]["RRJ securityDenial"] == 3


def test_registration_is_closed_by_default(ep: Endpoint) -> None:
    """Without open_registration only the plan's endpoints register, and only under what the plan gives
    them: a rogue on the network cannot take the national MCU's prefix or number."""
    g = Gatekeeper(lambda: CLOSED, call_signal_address=CAU_CS)
    g.start("127.0.0.1", 0)
    try:
        for aliases in ([("h323-ID", "stranger")], [("dialedDigits", "0090001")], [("h323-ID", "rogue-mcu")]):
            rrj = ep.register(g, aliases)
            assert rrj.kind == "registrationReject" and rrj.reject_reason == "securityDenial", aliases
        rcf = ep.register(g, [("h323-ID", "xa-an-binh"), ("dialedDigits", "0090001"), ("dialedDigits", "00")])
        assert rcf.kind == "registrationConfirm"
        # the RCF lists what was registered: the plan's alias and number, nothing else it asked for
        assert rcf.aliases == [("h323-ID", "xa-an-binh"), ("dialledDigits", "8101001")]
        assert g.by_alias("0090001") is None and g.resolve("0090001")[0] == "dial"
        assert g.resolve("8101001")[0] == "endpoint"
    finally:
        wait(g.stop())


def _rrq_with_prefixes(ep: Endpoint, aliases, prefixes) -> bytes:
    from gateway.h323 import asn1

    data = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=aliases, endpoint_kind="mcu")
    _, body = asn1.decode_ras(data)
    body["terminalType"]["mcu"] = {"protocol": [("h323", {"supportedPrefixes": [
        {"prefix": asn1.alias_address(("dialedDigits", p))} for p in prefixes]})]}
    return asn1.encode_ras(("registrationRequest", body))


def test_prefixes_are_the_plans(gk: Gatekeeper, ep: Endpoint, ep2: Endpoint) -> None:
    # a plan MCU gets its plan prefixes, not the ones it asks for beyond them
    rcf = ep.ask(_rrq_with_prefixes(ep, [("h323-ID", "mcu-huyen")], ["5", "00", "8"]), gk)
    assert rcf.kind == "registrationConfirm"
    assert gk.registrations[rcf.endpoint_identifier].prefixes == ["5"]
    assert gk.resolve("5123")[0] == "endpoint" and gk.resolve("0090001")[0] == "dial"
    # an open-registration stranger may register a prefix nothing in the plan uses, and no other
    rcf = ep2.ask(_rrq_with_prefixes(ep2, [("h323-ID", "lab-gw")], ["00", "81", "7"]), gk)
    assert gk.registrations[rcf.endpoint_identifier].prefixes == ["7"]
    # nor an alias the plan routes (the national MCU's number) or gives to an endpoint
    for alias in ("0090001", "8000", "8107"):
        assert ep2.register(gk, [("h323-ID", "lab-gw"), ("dialedDigits", alias)]).reject_reason == "duplicateAlias"
    # (the number of an endpoint with a password: that endpoint, which must prove it)
    assert ep2.register(gk, [("h323-ID", "lab-gw"), ("dialedDigits", "8101003")]).reject_reason == "securityDenial"


def test_an_alias_cannot_be_taken_over(gk: Gatekeeper, ep: Endpoint, rogue: Endpoint) -> None:
    """Re-registering with the victim's call signalling address (or its endpointIdentifier) from
    another address, then URQ, then RRQ at one's own address: the victim keeps its alias."""
    victim = ep.register(gk, [("h323-ID", "xa-an-binh"), ("dialedDigits", "8101001")]).endpoint_identifier
    rrj = rogue.register(gk, [("h323-ID", "xa-an-binh")], cs=ep.call_signal)
    assert rrj.reject_reason == "duplicateAlias"
    rrj = rogue.ask(ras.build_rrq(rogue.next_seq(), [ep.call_signal], [rogue.address], aliases=[("h323-ID", "xa-an-binh")],
                                endpoint_identifier=victim), gk)
    assert rrj.reject_reason == "duplicateAlias"
    urj = rogue.ask(ras.build_urq(rogue.next_seq(), [ep.call_signal], endpoint_identifier=victim), gk)
    assert urj.kind == "unregistrationReject"
    urj = rogue.ask(ras.build_urq(rogue.next_seq(), [ep.call_signal]), gk)
    assert urj.kind == "unregistrationReject"
    assert rogue.register(gk, [("h323-ID", "xa-an-binh")]).reject_reason == "duplicateAlias"
    reg = gk.by_alias("8101001")
    assert reg is not None and reg.endpoint_id == victim and reg.ras_address == ep.address
    assert reg.call_signal_addresses == [ep.call_signal]


def test_an_endpoint_with_a_password_registers_only_with_a_token(gk: Gatekeeper, ep: Endpoint) -> None:
    rrj = ep.register(gk, [("h323-ID", "hdx-pw")])
    assert rrj.kind == "registrationReject" and rrj.reject_reason == "securityDenial"
    assert gk.by_alias("8101003") is None


def test_same_endpoint_registering_again_keeps_its_identifier(gk: Gatekeeper, ep: Endpoint) -> None:
    first = ep.register(gk, [("h323-ID", "hdx-hg")])
    again = ep.register(gk, [("h323-ID", "hdx-hg"), ("dialedDigits", "2001")])   # e.g. after a reboot
    assert again.endpoint_identifier == first.endpoint_identifier and len(gk.registrations) == 1
    assert gk.by_alias("2001").endpoint_id == first.endpoint_identifier
    # a retransmitted RRQ (same requestSeqNum) gets the same answer, not a second registration
    data = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=[("h323-ID", "hdx-hg")])
    a, b = ep.ask(data, gk), ep.ask(data, gk)
    assert a.endpoint_identifier == b.endpoint_identifier and gk.stats["events"]["retransmission"] == 1


def test_keepalive_refreshes_and_expiry_removes(ep: Endpoint) -> None:
    clock = task.Clock()
    g = Gatekeeper(lambda: PLAN, call_signal_address=CAU_CS, time_to_live=60, expiry_grace=0, clock=clock)
    g.start("127.0.0.1", 0)
    try:
        rcf = ep.register(g, [("h323-ID", "xa-an-binh")], ttl=None)
        eid = rcf.endpoint_identifier
        assert rcf.time_to_live == 60
        clock.advance(50)
        keep = ep.ask(ras.build_keepalive_rrq(ep.next_seq(), [ep.call_signal], [ep.address], eid, "cau"), g)
        assert keep.kind == "registrationConfirm" and keep.endpoint_identifier == eid and keep.time_to_live == 60
        clock.pump([1.0] * 50)                     # 100 s after registering, 50 s after the keep-alive
        assert eid in g.registrations and g.stats["events"]["keepalive"] == 1
        # an ARQ admitted now is dropped with the registration
        acf = ep.ask(ras.build_arq(ep.next_seq(), eid, [], 3840, 1, CONF, CALL,
                                   destination_aliases=[("dialedDigits", "8000")]), g)
        assert acf.kind == "admissionConfirm" and len(g.calls) == 1
        clock.pump([1.0] * 11)                     # 61 s without a keep-alive
        assert eid not in g.registrations and g.by_alias("xa-an-binh") is None and not g.calls
        run_for(0.1)
        urq = ep.inbox[-1]                         # the endpoint is told: URQ ttlExpired
        assert urq.kind == "unregistrationRequest" and urq.unregistration_reason == "ttlExpired"
        # a keep-alive from the forgotten endpoint: full registration required
        rrj = ep.ask(ras.build_keepalive_rrq(ep.next_seq(), [ep.call_signal], [ep.address], eid, "cau"), g)
        assert rrj.reject_reason == "fullRegistrationRequired"
    finally:
        wait(g.stop())


def test_unregistration(gk: Gatekeeper, ep: Endpoint) -> None:
    eid = ep.register(gk, [("h323-ID", "hdx-hg")]).endpoint_identifier
    ucf = ep.ask(ras.build_urq(ep.next_seq(), [ep.call_signal], endpoint_identifier=eid), gk)
    assert ucf.kind == "unregistrationConfirm" and not gk.registrations and gk.by_alias("hdx-hg") is None
    urj = ep.ask(ras.build_urq(ep.next_seq(), [ep.call_signal], endpoint_identifier=eid), gk)
    assert urj.kind == "unregistrationReject" and urj.reject_reason == "notCurrentlyRegistered"


def test_admission(gk: Gatekeeper, ep: Endpoint, ep2: Endpoint) -> None:
    eid = ep.register(gk, [("h323-ID", "xa-an-binh"), ("dialedDigits", "8101001")]).endpoint_identifier
    other = ep2.register(gk, [("h323-ID", "hdx-hg"), ("dialedDigits", "2001")]).endpoint_identifier

    def arq(number: str, bandwidth: int = 3840, **kw) -> RasMessage:
        return ep.ask(ras.build_arq(ep.next_seq(), kw.pop("eid", eid), [("h323-ID", "xa-an-binh")], bandwidth, 7,
                                    CONF, kw.pop("call", CALL), destination_aliases=[("dialedDigits", number)],
                                    **kw), gk)

    room = arq("8000")           # the provincial room: to Cầu's call signalling, gatekeeper-routed
    assert room.kind == "admissionConfirm" and room.dest_call_signal_address == CAU_CS
    assert room.call_model == "gatekeeperRouted" and room.bandwidth == 3840
    tmpl = arq("8107", bandwidth=100000, call=bytes(16))    # a template room; bandwidth capped
    assert tmpl.dest_call_signal_address == CAU_CS and tmpl.bandwidth == 20480
    direct = arq("2001", call=b"\x01" * 16)                # a registered endpoint: straight to it
    assert direct.kind == "admissionConfirm" and direct.call_model == "direct"
    assert direct.dest_call_signal_address == ep2.call_signal
    out = arq("0090001", call=b"\x02" * 16)                # a dial route: Cầu dials out
    assert out.dest_call_signal_address == CAU_CS
    assert arq("5555").reject_reason == "calledPartyNotRegistered"
    assert arq("1900").reject_reason == "requestDenied"
    assert arq("8000", eid="99_nobody").reject_reason == "callerNotRegistered"
    # the answering side of a call
    ans = ep2.ask(ras.build_arq(ep2.next_seq(), other, [("h323-ID", "hdx-hg")], 3840, 9, CONF, CALL,
                                answer_call=True), gk)
    assert ans.kind == "admissionConfirm"
    assert len(gk.calls) == 5 and gk.calls[(CALL, eid)].destination == "8000"
    # bandwidth change, then disengage forgets the call
    bcf = ep.ask(ras.build_brq(ep.next_seq(), eid, CONF, 7, 7680, CALL), gk)
    assert bcf.kind == "bandwidthConfirm" and bcf.bandwidth == 7680 and gk.calls[(CALL, eid)].bandwidth == 7680
    dcf = ep.ask(ras.build_drq(ep.next_seq(), eid, CONF, 7, CALL), gk)
    assert dcf.kind == "disengageConfirm" and (CALL, eid) not in gk.calls and (CALL, other) in gk.calls
    brj = ep.ask(ras.build_brq(ep.next_seq(), eid, CONF, 7, 7680, CALL), gk)
    assert brj.kind == "bandwidthReject" and brj.reject_reason == "invalidConferenceID"
    drj = ep.ask(ras.build_drq(ep.next_seq(), "99_nobody", CONF, 7, CALL), gk)
    assert drj.kind == "disengageReject" and drj.reject_reason == "notRegistered"


def test_location(gk: Gatekeeper, ep: Endpoint, ep2: Endpoint) -> None:
    gk.neighbours = Gatekeeper(lambda: PLAN, neighbours=["127.0.0.0/8"]).neighbours
    ep2.register(gk, [("h323-ID", "hdx-hg"), ("dialedDigits", "2001")])
    lcf = ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "8000")], ep.address,
                               source_aliases=[("h323-ID", "national-gk")]), gk)
    assert lcf.kind == "locationConfirm"
    assert lcf.call_signal_addresses == [CAU_CS] and lcf.ras_addresses == [("127.0.0.1", gk.port)]
    lcf = ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "2001")], ep.address), gk)
    assert lcf.call_signal_addresses == [ep2.call_signal]
    lrj = ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "5555")], ep.address), gk)
    assert lrj.kind == "locationReject" and lrj.reject_reason == "notRegistered"
    lrj = ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "0090001")], ep.address), gk)
    assert lrj.reject_reason == "requestDenied"


def test_lrq_is_answered_only_to_neighbours_and_never_reflected(gk: Gatekeeper, ep: Endpoint, ep2: Endpoint) -> None:
    """By default no one is a neighbour: an LRQ for a room is refused, and the refusal goes back to
    the sender, not to the replyAddress it names (a spoofed one would make us a reflector)."""
    lrj = ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "8000")], ep2.address), gk)
    assert lrj.kind == "locationReject" and lrj.reject_reason == "requestDenied"
    run_for(0.1)
    assert not ep2.inbox, "the gatekeeper answered the replyAddress of an LRQ from a non-neighbour"
    gk.neighbours = Gatekeeper(lambda: PLAN, neighbours=["127.0.0.1"]).neighbours
    assert ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "8000")], ep.address), gk).kind == "locationConfirm"


def test_registrations_are_capped_per_source(ep: Endpoint) -> None:
    g = Gatekeeper(lambda: PLAN, call_signal_address=CAU_CS,
                   max_registrations_per_source=2, expiry_grace=0)
    g.start("127.0.0.1", 0)
    try:
        got = [ep.register(g, [("h323-ID", f"lab-{i}")], cs=("127.0.0.1", 30000 + i)) for i in range(3)]
        assert [r.kind for r in got[:2]] == ["registrationConfirm"] * 2, [(r.kind, r.reject_reason) for r in got]
        assert got[2].kind == "registrationReject" and got[2].reject_reason == "resourceUnavailable"
    finally:
        wait(g.stop())


def test_irr_is_a_keepalive(ep: Endpoint) -> None:
    clock = task.Clock()
    g = Gatekeeper(lambda: PLAN, call_signal_address=CAU_CS, time_to_live=60, expiry_grace=0, clock=clock)
    g.start("127.0.0.1", 0)
    try:
        eid = ep.register(g, [("h323-ID", "hdx-hg")]).endpoint_identifier
        clock.advance(50)
        ack = ep.ask(ras.build_irr(ep.next_seq(), eid, ep.address, [ep.call_signal], need_response=True,
                                   unsolicited=True), g)
        assert ack.kind == "infoRequestAck"
        clock.pump([1.0] * 50)
        assert eid in g.registrations
        assert g.send_irq(eid)
        run_for(0.1)
        assert ep.inbox[-1].kind == "infoRequest"
        nak = ep.ask(ras.build_irr(ep.next_seq(), "99_x", ep.address, [ep.call_signal], need_response=True), g)
        assert nak.kind == "infoRequestNak"
    finally:
        wait(g.stop())


@pytest.mark.parametrize("junk", [b"", b"\xff\xff\xff\xff", b"\x0e\x00\x00\x06", os.urandom(300)])
def test_malformed_datagram_is_dropped_and_the_gatekeeper_keeps_answering(gk: Gatekeeper, ep: Endpoint,
                                                                          junk: bytes) -> None:
    before = gk.stats["events"]["malformed"]
    ep.port.write(junk or b"\x00", ("127.0.0.1", gk.port))
    # a truncated but otherwise valid RRQ, too
    ep.port.write(ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address])[:9], ("127.0.0.1", gk.port))
    run_for(0.05)
    assert gk.stats["events"]["malformed"] >= before + 1
    gcf = ep.ask(ras.build_grq(ep.next_seq(), ep.address), gk)
    assert gcf.kind == "gatekeeperConfirm"


def test_unknown_request_gets_xrs(gk: Gatekeeper, ep: Endpoint) -> None:
    from gateway.h323 import asn1

    sci = asn1.encode_ras(("serviceControlIndication", {
        "requestSeqNum": 4242, "serviceControl": [], "genericData": []}))
    seq_d = ep._waiting[4242] = defer.Deferred()
    ep.port.write(sci, ("127.0.0.1", gk.port))
    xrs = wait(seq_d, timeout=3)
    assert xrs.kind == "unknownMessageResponse"


# --------------------------------------------------------------------------- tshark on the wire


def _tshark_capture(port: int, count: int, action) -> str:
    tshark = shutil.which("tshark") or "tshark"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ras.pcap")
        env = dict(os.environ, HOME=tmp)
        with LoopbackCapture(f"udp port {port}", path):
            run_for(0.2)
            action()
            run_for(0.5)  # the last answers (retransmissions under load add frames)
        decode = ["-n", "-r", path, "-d", f"udp.port=={port},h225"]
        bad = subprocess.run([tshark, *decode, "-Y", "_ws.malformed || _ws.expert.severity >= error"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 0, bad.stderr
        assert bad.stdout.strip() == "", f"tshark flags malformed/error packets:\n{bad.stdout}"
        # -Y: not the capture's probes
        full = subprocess.run([tshark, *decode, "-Y", f"udp.port=={port}", "-V"], capture_output=True, text=True, env=env, timeout=60)
        assert full.returncode == 0, full.stderr
        return full.stdout


def test_tshark_decodes_what_the_gatekeeper_sends(gk: Gatekeeper, ep: Endpoint) -> None:
    gk.neighbours = Gatekeeper(lambda: PLAN, neighbours=["127.0.0.1"]).neighbours

    def exchange() -> None:
        eid = ep.register(gk, [("h323-ID", "xa-an-binh"), ("dialedDigits", "8101001")]).endpoint_identifier
        ep.ask(ras.build_arq(ep.next_seq(), eid, [("h323-ID", "xa-an-binh")], 3840, 7, CONF, CALL,
                             destination_aliases=[("dialedDigits", "8000")]), gk)
        ep.ask(ras.build_lrq(ep.next_seq(), [("dialedDigits", "8000")], ep.address), gk)
        ep.register(gk, [("h323-ID", "xa-xa-xoi")])

    text = _tshark_capture(gk.port, 8, exchange)
    for word in ("registrationConfirm", "admissionConfirm", "gatekeeperRouted", "locationConfirm",
                 "registrationReject", "securityDenial", "timeToLive: 300"):
        assert word in text, word
    assert len(re.findall(r"^Frame \d+:", text, re.M)) >= 8


# --------------------------------------------------------------------------- H.235.1 passwords

def _independent_token(data: bytes, password: str, general_id: str, random: int, timestamp: int) -> bytes:
    """H.235.1 procedure I written out from the recommendation with hashlib/hmac (not gateway.h323.h235):
    a placeholder hash, the encoding, the placeholder zeroed, HMAC-SHA1 keyed with SHA-1(password), 96 bits."""
    import hashlib
    import hmac as hm

    from gateway.h323 import asn1

    kind, body = asn1.decode_ras(data)
    mark = b"\xa5" * 12
    body["cryptoTokens"] = [("nestedcryptoToken", ("cryptoHashedToken", {
        "tokenOID": (0, 0, 8, 235, 0, 2, 1),
        "hashedVals": {"tokenOID": (0, 0, 8, 235, 0, 2, 5), "timeStamp": timestamp, "random": random,
                       "generalID": general_id},
        "token": {"algorithmOID": (0, 0, 8, 235, 0, 2, 6), "paramS": {}, "hash": (int.from_bytes(mark, "big"), 96)},
    }))]
    out = bytearray(asn1.encode_ras((kind, body)))
    at = out.index(mark)
    out[at:at + 12] = bytes(12)
    out[at:at + 12] = hm.new(hashlib.sha1(password.encode()).digest(), bytes(out), hashlib.sha1).digest()[:12]
    return bytes(out)


def test_h235_password_registration(ep: Endpoint) -> None:
    import time as _time

    from gateway.h323 import h235

    g = Gatekeeper(lambda: PLAN, gatekeeper_id="cau-gk", call_signal_address=CAU_CS, reply_cache_seconds=0)
    g.start("127.0.0.1", 0)
    try:
        now = int(_time.time())
        plain = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=[("h323-ID", "hdx-pw")])
        wrong = ep.ask(_independent_token(plain, "doan-mo", "cau-gk", 1, now), g)
        assert wrong.kind == "registrationReject" and wrong.reject_reason == "securityDenial"
        assert g.guard.stats["failures"] == 1
        other_gk = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=[("h323-ID", "hdx-pw")])
        assert ep.ask(_independent_token(other_gk, "mat-khau", "national", 2, now), g).reject_reason == "securityDenial"
        stale = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=[("h323-ID", "hdx-pw")])
        assert ep.ask(_independent_token(stale, "mat-khau", "cau-gk", 3, now - 4 * 3600), g).reject_reason == "securityDenial"
        good = _independent_token(ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address],
                                                aliases=[("h323-ID", "hdx-pw")]), "mat-khau", "cau-gk", 4, now)
        rcf = ep.ask(good, g)
        assert rcf.kind == "registrationConfirm", rcf.reject_reason
        eid = rcf.endpoint_identifier
        assert g.by_alias("8101003").endpoint_id == eid
        # the gatekeeper's answer carries its own token, for the endpoint's password
        tok = h235.verify(rcf.raw, rcf.value, "mat-khau", gatekeeper_id=None)
        assert tok.senders_id == "cau-gk" and tok.general_id == eid
        # the same datagram again (a replay): refused
        assert ep.ask(good, g).reject_reason == "securityDenial"
        # keep-alive: with a token it refreshes, without one it is refused
        keep = ras.build_keepalive_rrq(ep.next_seq(), [ep.call_signal], [ep.address], eid, "cau-gk")
        assert ep.ask(keep, g).reject_reason == "securityDenial"
        keep = ras.build_keepalive_rrq(ep.next_seq(), [ep.call_signal], [ep.address], eid, "cau-gk")
        assert ep.ask(_independent_token(keep, "mat-khau", "cau-gk", 5, now), g).kind == "registrationConfirm"
        # ARQ and URQ need the token too
        arq = ras.build_arq(ep.next_seq(), eid, [("h323-ID", "hdx-pw")], 3840, 7, CONF, CALL,
                            destination_aliases=[("dialedDigits", "8000")])
        assert ep.ask(arq, g).reject_reason == "securityDenial"
        arq = ras.build_arq(ep.next_seq(), eid, [("h323-ID", "hdx-pw")], 3840, 7, CONF, CALL,
                            destination_aliases=[("dialedDigits", "8000")])
        assert ep.ask(_independent_token(arq, "mat-khau", "cau-gk", 6, now), g).kind == "admissionConfirm"
        urq = ras.build_urq(ep.next_seq(), [ep.call_signal], endpoint_identifier=eid)
        assert ep.ask(urq, g).kind == "unregistrationReject" and eid in g.registrations
        urq = ras.build_urq(ep.next_seq(), [ep.call_signal], endpoint_identifier=eid)
        assert ep.ask(_independent_token(urq, "mat-khau", "cau-gk", 7, now), g).kind == "unregistrationConfirm"
    finally:
        wait(g.stop())


def test_h235_guessing_locks_the_address_out(rogue: Endpoint) -> None:
    import time as _time

    g = Gatekeeper(lambda: PLAN, gatekeeper_id="cau-gk", call_signal_address=CAU_CS)
    g.start("127.0.0.1", 0)
    try:
        now = int(_time.time())
        for i in range(20):       # (127.0.0.2 is loopback: no per-address lock; the account's twenty)
            rrq = ras.build_rrq(rogue.next_seq(), [rogue.call_signal], [rogue.address], aliases=[("h323-ID", "hdx-pw")])
            assert rogue.ask(_independent_token(rrq, f"guess-{i}", "cau-gk", i, now), g).reject_reason == "securityDenial"
        rrq = ras.build_rrq(rogue.next_seq(), [rogue.call_signal], [rogue.address], aliases=[("h323-ID", "hdx-pw")])
        assert rogue.ask(_independent_token(rrq, "mat-khau", "cau-gk", 99, now), g).reject_reason == "securityDenial"
        assert g.by_alias("hdx-pw") is None and g.guard.alarms()
    finally:
        wait(g.stop())


def test_tshark_reads_the_h235_tokens(gk: Gatekeeper, ep: Endpoint) -> None:
    from gateway.h323 import h235

    def exchange() -> None:
        rrq = ras.build_rrq(ep.next_seq(), [ep.call_signal], [ep.address], aliases=[("h323-ID", "hdx-pw")])
        assert ep.ask(h235.sign(rrq, "mat-khau", general_id="cau-gk", senders_id=None, random=1), gk).kind \
            == "registrationConfirm"

    text = _tshark_capture(gk.port, 2, exchange)
    assert text.count("HMAC-SHA1-96") >= 2, text[-3000:]           # our RRQ and the gatekeeper's RCF
    assert "cryptoHashedToken" in text and "generalID: cau-gk" in text
