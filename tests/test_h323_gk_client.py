"""Endpoint mode: Cầu registers with an external gatekeeper ("national GK" = our own Gatekeeper on
another socket), keeps the registration alive, asks for admission, and unregisters."""
from __future__ import annotations

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol

from gateway.dialplan import parse_dialplan
from gateway.h323 import ras
from gateway.h323.gatekeeper import Gatekeeper
from gateway.h323.gk_client import GatekeeperClient, RegistrationFailed
from tests.conftest import run_for, wait

NATIONAL_PLAN = parse_dialplan("""
version: 1
rooms:
  - id: quoc-gia
    name: "Phiên họp toàn quốc"
    numbers: ["90001"]
endpoints:
  - alias: cau-tinh
    number: "8000"
    protocol: h323
    networks: ["127.0.0.0/8"]
    prefixes: ["80", "81"]
""", "national.yaml")

NATIONAL_CS = ("127.0.0.1", 11720)
CAU_CS = ("127.0.0.1", 21720)
CAU_ALIASES = [("h323-ID", "cau-tinh"), ("dialedDigits", "8000")]
CONF = bytes(range(16))
CALL = bytes(range(16, 32))


@pytest.fixture
def national():
    clock = task.Clock()
    gk = Gatekeeper(lambda: NATIONAL_PLAN, gatekeeper_id="national", call_signal_address=NATIONAL_CS,
                    time_to_live=60, expiry_grace=0, clock=clock)
    gk.start("127.0.0.1", 0)
    gk.test_clock = clock
    yield gk
    wait(gk.stop())


def client_for(gk: Gatekeeper, clock=None, **kw) -> GatekeeperClient:
    kw.setdefault("prefixes", ["80", "81"])
    return GatekeeperClient(("127.0.0.1", gk.port), CAU_ALIASES, CAU_CS, clock=clock, **kw)


def settle(seconds: float = 0.05) -> None:
    run_for(seconds)


def test_register_keepalive_admission_and_unregister(national: Gatekeeper) -> None:
    clock = task.Clock()
    client = client_for(national, clock, discover=True, time_to_live=300)
    assert client.state == "idle"
    assert wait(client.start("127.0.0.1", 0)) is client
    assert client.state == "registered" and client.gatekeeper_id == "national"
    assert client.granted_ttl == 60                      # the national GK grants at most 60 s
    reg = national.registrations[client.endpoint_id]
    assert reg.endpoint_type == "gateway" and reg.prefixes == ["80", "81"]
    assert reg.call_signal_addresses == [CAU_CS] and reg.endpoint_spec.alias == "cau-tinh"
    assert national.stats["received"]["GRQ"] == 1 and national.stats["received"]["RRQ"] == 1

    # keep-alive: a lightweight RRQ at 0.8 x timeToLive, seen by the GK as such
    clock.advance(47)
    settle()
    assert national.stats["events"]["keepalive"] == 0
    clock.advance(1)
    settle()
    assert national.stats["events"]["keepalive"] == 1 and national.stats["received"]["RRQ"] == 2
    assert client.state == "registered" and client.stats["keepalives"] == 1

    # ARQ through the national GK to the national room: its MCU's address
    res = wait(client.admission("90001", CALL, CONF, 3840))
    assert res.ok and res.dest_call_signal_address == NATIONAL_CS and res.call_model == "gatekeeperRouted"
    assert res.bandwidth == 3840 and (CALL, client.endpoint_id) in national.calls
    res = wait(client.admission("77777", b"\x01" * 16, CONF, 3840))
    assert not res.ok and res.reason == "calledPartyNotRegistered"
    # another national endpoint dialing a provincial number reaches Cầu through its supportedPrefixes
    assert national.resolve("8107")[1] is reg
    assert wait(client.disengage(CALL, CONF)) is True
    assert (CALL, client.endpoint_id) not in national.calls

    # stop: URQ, the national GK forgets us
    assert wait(client.stop()) is True
    assert not national.registrations and client.state == "idle"
    assert national.stats["received"]["URQ"] == 1


def test_reregisters_when_the_gatekeeper_forgot_it(national: Gatekeeper) -> None:
    clock = task.Clock()
    client = client_for(national, clock, time_to_live=60)
    wait(client.start("127.0.0.1", 0))
    first = client.endpoint_id
    national.unregister(first)                   # e.g. the national GK restarted
    assert not national.registrations
    clock.advance(48)                            # keep-alive -> RRJ fullRegistrationRequired -> full RRQ
    settle(0.1)
    assert national.stats["rejects"]["RRJ fullRegistrationRequired"] == 1
    assert client.state == "registered" and client.stats["reregistrations"] == 1
    assert client.endpoint_id in national.registrations and client.endpoint_id != first
    res = wait(client.admission([("dialledDigits", "90001")], CALL, CONF, 1000))
    assert res.ok
    wait(client.stop())


def test_gatekeeper_urq_and_irq(national: Gatekeeper) -> None:
    client = client_for(national, task.Clock())
    wait(client.start("127.0.0.1", 0))
    eid = client.endpoint_id
    assert national.send_irq(eid)
    settle()
    assert national.stats["received"]["IRR"] == 1
    national.unregister(eid, notify=True, reason="maintenance")   # GK-initiated URQ
    settle(0.1)
    assert national.stats["received"]["UCF"] == 1
    assert client.state == "registered" and client.endpoint_id in national.registrations
    wait(client.stop())


def test_irr_keepalive(national: Gatekeeper) -> None:
    clock = task.Clock()
    client = client_for(national, clock, keepalive_with_irr=True)
    wait(client.start("127.0.0.1", 0))
    clock.advance(48)
    settle()
    assert national.stats["received"]["IRR"] == 1 and national.stats["events"]["keepalive"] == 1
    assert client.stats["received IACK"] == 1 and client.state == "registered"
    wait(client.stop())


def test_rejected_registration(national: Gatekeeper) -> None:
    strict = Gatekeeper(lambda: NATIONAL_PLAN, gatekeeper_id="strict")      # registration is closed
    strict.start("127.0.0.1", 0)
    client = GatekeeperClient(("127.0.0.1", strict.port), [("h323-ID", "stranger")], CAU_CS,
                              clock=task.Clock())
    try:
        with pytest.raises(RegistrationFailed, match="RRJ securityDenial"):
            wait(client.start("127.0.0.1", 0))
        assert client.state == "rejected" and client.last_error == "RRJ securityDenial"
        assert client.endpoint_id is None
        res = wait(client.admission("90001", CALL, CONF, 100))
        assert not res.ok and res.reason == "not registered with the gatekeeper"
    finally:
        wait(client.stop())
        wait(strict.stop())


class Silent(DatagramProtocol):
    """A gatekeeper that never answers."""

    def __init__(self) -> None:
        self.received: list[ras.RasMessage] = []

    def datagramReceived(self, data, addr) -> None:  # noqa: N802
        self.received.append(ras.parse_ras(data))


def test_retries_then_reports_unreachable_and_tries_again_later() -> None:
    silent = Silent()
    port = reactor.listenUDP(0, silent, interface="127.0.0.1")
    client = GatekeeperClient(("127.0.0.1", port.getHost().port), CAU_ALIASES, CAU_CS, ras_timeout=0.1,
                              ras_tries=3, retry_interval=0.3)
    try:
        with pytest.raises(RegistrationFailed, match="after 3 tries"):
            wait(client.start("127.0.0.1", 0))
        assert client.state == "unreachable" and "no answer" in client.last_error
        rrqs = [m for m in silent.received if m.kind == "registrationRequest"]
        assert len(rrqs) == 3 and len({m.seq for m in rrqs}) == 1      # retransmissions keep the seq
        run_for(0.35)                                                   # the background retry starts
        assert len([m for m in silent.received if m.kind == "registrationRequest"]) >= 4
    finally:
        wait(client.stop())
        wait(defer.maybeDeferred(port.stopListening))
    assert client.state == "idle"


def test_registering_with_a_gatekeeper_password() -> None:
    """Cầu with a national gatekeeper password: GRQ offers H.235.1, every later request carries a
    token; a wrong password is refused."""
    plan = parse_dialplan('version: 1\nrooms: []\nendpoints:\n  - {alias: cau-tinh, number: "8000", '
                          'protocol: h323, password: "quoc-gia", networks: ["127.0.0.0/8"]}\n', "national.yaml")
    gk = Gatekeeper(lambda: plan, gatekeeper_id="national", call_signal_address=NATIONAL_CS)
    gk.start("127.0.0.1", 0)
    try:
        bad = client_for(gk, task.Clock(), discover=True, password="sai", endpoint_kind="terminal", prefixes=[])
        with pytest.raises(RegistrationFailed, match="securityDenial"):
            wait(bad.start("127.0.0.1", 0))
        wait(bad.stop())
        client = client_for(gk, task.Clock(), discover=True, password="quoc-gia", endpoint_kind="terminal",
                            prefixes=[])
        wait(client.start("127.0.0.1", 0))
        assert client.state == "registered" and gk.by_alias("8000") is not None
        res = wait(client.admission("8000", CALL, CONF, 3840))
        assert res.ok
        assert wait(client.stop()) is True and not gk.registrations
    finally:
        wait(gk.stop())
