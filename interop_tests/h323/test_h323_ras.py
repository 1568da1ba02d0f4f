"""RAS cases for any H.323 gatekeeper (``--profile h323-gatekeeper --gatekeeper HOST:PORT``, with
``--h323-alias`` when it registers only the endpoints it knows): discovery, admission of an endpoint
that is not registered, and a registration's life — RRQ, the lightweight keep-alive RRQ, URQ — after
which admission is refused (H.225.0 §7.2, §7.9, §7.10, §7.11). Each message is built and read by
the suite (gateway.h323.ras, PER checked by tshark's dissector elsewhere) over a UDP socket of its
own, so nothing but the gatekeeper's answers decides the verdict."""
from __future__ import annotations

import os
import socket
import time

import pytest

from gateway.h323 import ras
from interop_tests import evidence
from interop_tests.verdicts import not_applicable


class RasPeer:
    """A UDP socket that sends RAS requests to the gatekeeper and waits for the answer to each."""

    def __init__(self, gatekeeper: tuple[str, int]) -> None:
        self.gk = gatekeeper
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if gatekeeper[0].startswith("127.") else "", 0))
        self.addr = ("127.0.0.1" if gatekeeper[0].startswith("127.") else socket.gethostbyname(socket.gethostname()),
                     self.sock.getsockname()[1])
        self.seq = int.from_bytes(os.urandom(2), "big") % 30000 + 1

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def ask(self, data: bytes, seq: int, tries: int = 3, timeout: float = 1.5) -> ras.RasMessage:
        """Send (retransmitting as H.225.0 §7.1 allows) until an answer with ``seq`` comes; a
        requestInProgress (RIP) extends the wait."""
        for _ in range(tries):
            self.sock.sendto(data, self.gk)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    raw = self.sock.recv(65535)
                except OSError:
                    break
                try:
                    m = ras.parse_ras(raw)
                except ras.RasError as exc:
                    raise AssertionError(f"the gatekeeper's answer does not decode: {exc}") from exc
                if m.seq != seq:
                    continue
                if m.kind == "requestInProgress":
                    deadline = time.monotonic() + 10
                    continue
                return m
        raise AssertionError(f"no answer to the request (seq {seq}) in {tries} tries")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ras_peer(h323):
    if h323.gatekeeper is None:
        if h323.local_cau:
            pytest.fail("Cầu reports no RAS (gatekeeper) address")
        not_applicable("no gatekeeper named (--gatekeeper HOST:PORT)")
    p = RasPeer(h323.gatekeeper)
    yield p
    p.close()


@pytest.fixture
def lab_alias(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--h323-alias") or "lab-ras"


def test_discovery_grq_is_answered_with_gcf_or_grj(ras_peer):
    seq = ras_peer.next_seq()
    m = ras_peer.ask(ras.build_grq(seq, ras_peer.addr, aliases=[("h323-ID", "lab-discovery")]), seq)
    assert m.kind in ("gatekeeperConfirm", "gatekeeperReject"), f"a GRQ was answered {m.kind}"
    if m.kind == "gatekeeperConfirm":
        assert m.ras_addresses, "the GCF names no rasAddress (H.225.0 §7.8.2)"
        evidence.identify("H.225.0 gatekeeper identifier", m.gatekeeper_identifier or "(none given)")
    else:
        assert m.reject_reason, "the GRJ gives no rejectReason"
    evidence.measure("answer to GRQ", m.kind)


def test_an_endpoint_that_is_not_registered_is_not_admitted(ras_peer):
    seq = ras_peer.next_seq()
    arq = ras.build_arq(seq, "lab-not-registered-1", [("h323-ID", "lab-nobody")], 3840, 1, os.urandom(16),
                        os.urandom(16), destination_aliases=[("dialledDigits", "1000")],
                        src_call_signal_address=(ras_peer.addr[0], 1720))
    m = ras_peer.ask(arq, seq)
    evidence.measure("answer to an unregistered endpoint's ARQ", f"{m.kind} {m.reject_reason or ''}".strip(), "",
                     "admissionReject (callerNotRegistered)")
    assert m.kind == "admissionReject", f"an endpoint that never registered was answered {m.kind}"


def test_a_registration_is_kept_alive_then_ended_and_admission_stops(ras_peer, lab_alias):
    csa = (ras_peer.addr[0], 1720)
    seq = ras_peer.next_seq()
    rcf = ras_peer.ask(ras.build_rrq(seq, [csa], [ras_peer.addr], aliases=[("h323-ID", lab_alias)],
                                     time_to_live=60), seq)
    if rcf.kind == "registrationReject":
        not_applicable(f"the gatekeeper refused to register '{lab_alias}' ({rcf.reject_reason}): name an alias it "
                       "accepts with --h323-alias")
    assert rcf.kind == "registrationConfirm", f"the RRQ was answered {rcf.kind}"
    eid = rcf.endpoint_identifier
    assert eid, "the RCF gives no endpointIdentifier (H.225.0 §7.9.2)"
    evidence.measure("timeToLive granted", rcf.time_to_live if rcf.time_to_live is not None else "none", "s", "≤ 60")
    if rcf.time_to_live is not None:
        assert 0 < rcf.time_to_live <= 60, f"timeToLive {rcf.time_to_live} s for a request of 60 s (§7.9.1)"
    seq = ras_peer.next_seq()
    alive = ras_peer.ask(ras.build_keepalive_rrq(seq, [csa], [ras_peer.addr], eid, rcf.gatekeeper_identifier, 60), seq)
    assert alive.kind == "registrationConfirm", f"the keep-alive RRQ was answered {alive.kind} {alive.reject_reason}"
    seq = ras_peer.next_seq()
    ucf = ras_peer.ask(ras.build_urq(seq, [csa], endpoint_identifier=eid, aliases=[("h323-ID", lab_alias)],
                                     gatekeeper_identifier=rcf.gatekeeper_identifier), seq)
    assert ucf.kind == "unregistrationConfirm", f"the URQ was answered {ucf.kind} {ucf.reject_reason}"
    seq = ras_peer.next_seq()
    arq = ras.build_arq(seq, eid, [("h323-ID", lab_alias)], 3840, 2, os.urandom(16), os.urandom(16),
                        destination_aliases=[("dialledDigits", "1000")], src_call_signal_address=csa,
                        gatekeeper_identifier=rcf.gatekeeper_identifier)
    after = ras_peer.ask(arq, seq)
    evidence.measure("answer to ARQ after URQ", f"{after.kind} {after.reject_reason or ''}".strip(), "",
                     "admissionReject")
    assert after.kind == "admissionReject", f"after its URQ the endpoint was still admitted ({after.kind})"


def test_a_location_request_for_an_alias_nobody_has_is_rejected(ras_peer):
    seq = ras_peer.next_seq()
    alias = "lab-nobody-" + os.urandom(3).hex()
    m = ras_peer.ask(ras.build_lrq(seq, [("h323-ID", alias)], ras_peer.addr,
                                   source_aliases=[("h323-ID", "lab-neighbour")]), seq)
    evidence.measure("answer to an LRQ for an unknown alias", f"{m.kind} {m.reject_reason or ''}".strip(), "",
                     "locationReject")
    assert m.kind == "locationReject", f"an LRQ for '{alias}', which no endpoint has, was answered {m.kind}"
    assert m.reject_reason, "the LRJ gives no rejectReason"
