"""SIP transactions (RFC 3261 §17, §9, RFC 6026) over real loopback sockets.

Timer-exact tests drive the transaction layer with ``task.Clock`` (T1 = 1
virtual second) while the sockets run on the real reactor; the far end is
a plain socket, so every retransmission is counted on the wire.
"""
from __future__ import annotations

import socket

import pytest
from twisted.internet.task import Clock

from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.transaction import ClientTransaction, ServerTransaction, TransactionLayer
from gateway.sip.transport import Peer, SipTransport
from tests.conftest import run_for, wait
from tests.test_sip_transport import LO, RawTcp, RawUdp, poll, raw_udp, sip_request, transports  # noqa: F401


def new_request(method: str = "OPTIONS", *, call_id: str = "tx-1@test", cseq: int = 1) -> Request:
    """A request as the TU would build it: no Via (the layer adds one)."""
    raw = sip_request(method, call_id=call_id, cseq=cseq)
    req = parse_message(raw)
    req.headers.remove("Via")
    return req


def answer(phone: RawUdp, request_bytes: bytes, status: int, port: int, to_tag: str | None = "uas1") -> bytes:
    """The far end answers a request it received (to the Via: rport/sent-by)."""
    req = parse_message(request_bytes)
    data = make_response(req, status, to_tag=to_tag).serialize()
    phone.send(data, port)
    return data


def sends_over(clock: Clock, phone: RawUdp, until: float, step: float = 0.25) -> list[float]:
    """Advance the clock to ``until``; the clock time of every datagram seen."""
    times: list[float] = []
    while clock.seconds() < until - 1e-9:
        clock.advance(step)
        times += [clock.seconds()] * len(phone.drain())
    return times


@pytest.fixture
def clocked(transports):
    """(transport, layer on a Clock with T1=1, T2=4, T4=5, clock)."""
    t = transports()
    clock = Clock()
    layer = TransactionLayer(t, reactor=clock, T1=1.0, T2=4.0, T4=5.0)
    yield t, layer, clock
    layer.close()


# --- client transactions -----------------------------------------------------


def test_non_invite_client_retransmits_with_timer_e_and_stops_on_final(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[Response | None] = []
    tx = layer.client(new_request(), Peer("UDP", LO, phone.port), lambda r, tx: got.append(r))
    first = phone.recv()
    via = parse_message(first).top_via
    assert via.branch.startswith("z9hG4bK") and "rport" in via.params
    assert via.port == t.port and via.transport == "UDP"
    # Timer E: T1, 2T1, 4T1, then capped at T2 = 4
    assert sends_over(clock, phone, 20) == [1, 3, 7, 11, 15, 19]
    answer(phone, first, 100, t.port, to_tag=None)
    assert poll(lambda: got)
    assert tx.state == "proceeding"
    assert sends_over(clock, phone, 27) == [23, 27]  # proceeding: every T2
    answer(phone, first, 200, t.port)
    assert poll(lambda: len(got) == 2)
    assert [r.status for r in got] == [100, 200]
    assert tx.state == "completed"
    answer(phone, first, 200, t.port)  # a retransmitted final is absorbed
    run_for(0.03)
    assert len(got) == 2
    assert sends_over(clock, phone, 31) == []
    clock.advance(5)  # Timer K = T4
    assert tx.state == "terminated" and layer.clients == {}


def test_non_invite_client_times_out_after_64_t1(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[tuple[Response | None, ClientTransaction]] = []
    tx = layer.client(new_request(), Peer("UDP", LO, phone.port), lambda r, tx: got.append((r, tx)))
    phone.recv()
    times = sends_over(clock, phone, 63.5)
    assert got == []
    clock.advance(0.5)  # 64*T1: Timer F
    assert got == [(None, tx)]
    assert tx.failure == 408 and "timeout" in tx.error
    assert len(times) == 17 and times[-1] == 63
    assert sends_over(clock, phone, 80) == []
    assert layer.clients == {}


def test_no_retransmission_over_tcp_but_timer_f_still_runs(clocked):
    t, layer, clock = clocked
    listener = socket.socket()
    listener.bind((LO, 0))
    listener.listen(1)
    listener.setblocking(False)
    got: list[Response | None] = []
    tx = layer.client(new_request(), Peer("TCP", LO, listener.getsockname()[1]), lambda r, tx: got.append(r))
    conns: list[socket.socket] = []

    def accept() -> bool:
        try:
            conns.append(listener.accept()[0])
            return True
        except BlockingIOError:
            return False

    assert poll(accept)
    far = RawTcp(0, conns[0])
    msgs = far.messages(1)
    assert msgs[0].top_via.transport == "TCP"
    for _ in range(40):
        clock.advance(1)
        run_for(0.002)
    assert far.messages(2, timeout=0.1) == []  # nothing more on the stream
    clock.advance(24)
    assert got == [None] and tx.failure == 408
    far.close()
    listener.close()


def test_transport_error_fails_the_client_transaction_with_503(transports):
    t = transports()
    layer = TransactionLayer(t, T1=0.05)
    dead = socket.socket()
    dead.bind((LO, 0))
    port = dead.getsockname()[1]
    dead.close()
    got: list[ClientTransaction] = []
    tx = layer.client(new_request(), Peer("TCP", LO, port), lambda r, tx: got.append(tx) if r is None else None)
    assert poll(lambda: got)
    assert tx.failure == 503 and "failed" in tx.error
    assert layer.clients == {}


def test_invite_client_retransmits_until_provisional_and_acks_non_2xx(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[Response | None] = []
    tx = layer.client(new_request("INVITE"), Peer("UDP", LO, phone.port), lambda r, tx: got.append(r))
    first = phone.recv()
    invite = parse_message(first)
    # Timer A doubles without a cap
    assert sends_over(clock, phone, 20) == [1, 3, 7, 15]
    answer(phone, first, 180, t.port)
    assert poll(lambda: got)
    assert tx.state == "proceeding"
    assert sends_over(clock, phone, 200) == []  # no retransmission, and no Timer B
    assert got[-1].status == 180 and tx.state == "proceeding"
    answer(phone, first, 486, t.port, to_tag="busy9")
    ack_data = phone.recv()
    ack = parse_message(ack_data)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert ack.top_via.branch == invite.top_via.branch  # same transaction
    assert ack.to.tag == "busy9"
    assert str(ack.cseq) == "1 ACK" and ack.call_id == invite.call_id
    assert [r.status for r in got] == [180, 486]
    # the 486 again (our ACK lost): ACK again, TU not told twice
    answer(phone, first, 486, t.port, to_tag="busy9")
    again = phone.recv()
    assert parse_message(again).method == "ACK"
    assert [r.status for r in got] == [180, 486]
    assert tx.state == "completed"
    clock.advance(layer.timer_d)  # Timer D
    assert layer.clients == {}


def test_invite_client_times_out_with_timer_b(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[Response | None] = []
    tx = layer.client(new_request("INVITE"), Peer("UDP", LO, phone.port), lambda r, tx: got.append(r))
    phone.recv()
    assert sends_over(clock, phone, 64) == [1, 3, 7, 15, 31, 63]
    assert got == [None] and tx.failure == 408
    assert layer.clients == {}


def test_invite_client_passes_every_2xx_up_then_stray_2xx(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[tuple[int, bool]] = []
    strays: list[Response] = []
    layer.on_stray_2xx = strays.append
    tx = layer.client(new_request("INVITE"), Peer("UDP", LO, phone.port),
                      lambda r, tx: got.append((r.status, tx.duplicate)))
    first = phone.recv()
    answer(phone, first, 200, t.port, to_tag="a")
    assert poll(lambda: got)
    answer(phone, first, 200, t.port, to_tag="a")  # retransmission
    answer(phone, first, 200, t.port, to_tag="b")  # another fork
    assert poll(lambda: len(got) == 3)
    assert got == [(200, False), (200, True), (200, False)]
    assert tx.state == "accepted"
    assert phone.drain() == []  # the transaction never ACKs a 2xx: the TU does
    clock.advance(64)  # Timer M
    assert layer.clients == {}
    answer(phone, first, 200, t.port, to_tag="a")
    assert poll(lambda: strays)
    assert strays[0].status == 200 and strays[0].to.tag == "a"


def test_stray_response_dropped_and_counted(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    phone.send(make_response(parse_message(sip_request()), 200).serialize(), t.port)
    assert poll(lambda: layer.stats.stray_responses == 1)


def test_client_cancel_waits_for_a_provisional(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[Response | None] = []
    cancel_answers: list[Response | None] = []
    tx = layer.client(new_request("INVITE"), Peer("UDP", LO, phone.port), lambda r, tx: got.append(r))
    first = phone.recv()
    invite = parse_message(first)
    assert layer.cancel(tx, lambda r, ctx: cancel_answers.append(r)) is None
    clock.advance(1)
    seen = [parse_message(d) for d in phone.drain()]
    assert [m.method for m in seen] == ["INVITE"]  # a retransmission, no CANCEL yet
    answer(phone, first, 100, t.port, to_tag=None)
    cancel_data = phone.recv()
    cancel = parse_message(cancel_data)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri)
    assert cancel.top_via.branch == invite.top_via.branch
    assert str(cancel.cseq) == "1 CANCEL"
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    answer(phone, cancel_data, 200, t.port)
    answer(phone, first, 487, t.port)
    assert poll(lambda: len(got) == 2 and cancel_answers)
    assert [r.status for r in got] == [100, 487]
    assert cancel_answers[0].status == 200
    assert parse_message(phone.recv()).method == "ACK"


def test_cancelled_invite_without_final_ends_after_64_t1(clocked, raw_udp):
    t, layer, clock = clocked
    phone = raw_udp()
    got: list[Response | None] = []
    tx = layer.client(new_request("INVITE"), Peer("UDP", LO, phone.port), lambda r, tx: got.append(r))
    first = phone.recv()
    answer(phone, first, 180, t.port)
    assert poll(lambda: got)
    assert layer.cancel(tx) is not None
    clock.advance(64)
    assert got[-1] is None and tx.failure == 408
    clock.advance(10)
    assert layer.clients == {}


# --- server transactions -----------------------------------------------------


def test_server_absorbs_retransmitted_request_and_resends_last_response(transports, raw_udp):
    t = transports()
    layer = TransactionLayer(t, T1=0.05)
    calls: list[Request] = []

    def tu(req: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        calls.append(req)
        tx.respond(tx.make_response(200))

    layer.on_request = tu
    phone = raw_udp()
    req = sip_request(branch="z9hG4bKretx")
    phone.send(req, t.port)
    first = parse_message(phone.recv())
    phone.send(req, t.port)
    second = parse_message(phone.recv())
    assert first.status == second.status == 200
    assert first.to.tag == second.to.tag is not None
    assert len(calls) == 1 and layer.stats.absorbed == 1
    layer.close()


def test_invite_server_sends_100_and_resends_it_on_retransmission(transports, raw_udp):
    t = transports()
    layer = TransactionLayer(t, T1=0.05)
    held: list[ServerTransaction] = []
    layer.on_request = lambda req, tx, peer: held.append(tx)
    phone = raw_udp()
    inv = sip_request("INVITE", branch="z9hG4bKinv100")
    phone.send(inv, t.port)
    assert parse_message(phone.recv()).status == 100
    phone.send(inv, t.port)
    trying = parse_message(phone.recv())
    assert trying.status == 100 and trying.to.tag is None
    assert len(held) == 1
    held[0].respond(held[0].make_response(180))
    assert parse_message(phone.recv()).status == 180
    phone.send(inv, t.port)
    assert parse_message(phone.recv()).status == 180  # the most recent provisional
    layer.close()


def _ack_for(invite: bytes, response: Response, branch: str | None = None) -> bytes:
    req = parse_message(invite)
    via = req.headers.get("Via")
    if branch is not None:
        via = via.replace(req.top_via.branch, branch)
    return sip_request(
        "ACK", via=via, to=response.headers.get("To"), call_id=req.call_id, cseq=req.cseq.seq,
    )


def test_invite_server_retransmits_non_2xx_until_ack_and_absorbs_ack(clocked, raw_udp):
    t, layer, clock = clocked
    calls: list[tuple[str, ServerTransaction | None]] = []

    def tu(req: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        calls.append((req.method, tx))
        if tx is not None:
            tx.respond(tx.make_response(486))

    layer.on_request = tu
    phone = raw_udp()
    inv = sip_request("INVITE", branch="z9hG4bKbusy")
    phone.send(inv, t.port)
    busy = parse_message(phone.recv())
    assert busy.status == 486  # answered at once: no 100 needed
    tx = calls[0][1]
    assert tx.state == "completed"
    # Timer G: T1, 2T1, 4T1, capped at T2
    assert sends_over(clock, phone, 12) == [1, 3, 7, 11]
    phone.send(_ack_for(inv, busy), t.port)
    assert poll(lambda: tx.state == "confirmed")
    assert sends_over(clock, phone, 14) == []
    phone.send(_ack_for(inv, busy), t.port)  # retransmitted ACK: absorbed too
    run_for(0.03)
    assert [m for m, _ in calls] == ["INVITE"]  # the TU never sees this ACK
    clock.advance(5)  # Timer I = T4
    assert layer.servers == {}


def test_invite_server_gives_up_without_ack_timer_h(clocked, raw_udp):
    t, layer, clock = clocked
    held: list[ServerTransaction] = []
    timeouts: list[int] = []

    def tu(req, tx, peer):
        held.append(tx)
        tx.on_timeout = lambda: timeouts.append(1)
        tx.respond(tx.make_response(603))

    layer.on_request = tu
    phone = raw_udp()
    phone.send(sip_request("INVITE", branch="z9hG4bKnoack"), t.port)
    assert parse_message(phone.recv()).status == 603
    sends_over(clock, phone, 64)
    assert timeouts == [1] and held[0].state == "terminated"
    assert sends_over(clock, phone, 80) == []
    assert layer.servers == {}


def test_2xx_retransmitted_until_ack(clocked, raw_udp):
    t, layer, clock = clocked
    calls: list[tuple[str, ServerTransaction | None]] = []
    handles = []

    def tu(req, tx, peer):
        calls.append((req.method, tx))
        if req.method == "INVITE":
            handles.append(tx.retransmit_2xx_until_ack(tx.make_response(200), lambda: calls.append(("timeout", None))))

    layer.on_request = tu
    phone = raw_udp()
    inv = sip_request("INVITE", branch="z9hG4bKok")
    phone.send(inv, t.port)
    ok = parse_message(phone.recv())
    assert ok.status == 200 and ok.to.tag
    assert calls[0][1].state == "accepted"
    assert sends_over(clock, phone, 10) == [1, 3, 7]
    phone.send(inv, t.port)  # INVITE retransmission in Accepted: absorbed
    run_for(0.03)
    assert phone.drain() == []
    # the ACK for a 2xx is its own transaction (new branch) and goes to the TU
    phone.send(_ack_for(inv, ok, branch="z9hG4bKack2xx"), t.port)
    assert poll(lambda: len(calls) == 2)
    assert calls[1] == ("ACK", None)
    assert handles[0].acked and layer.pending_acks == {}
    assert sends_over(clock, phone, 30) == []
    clock.advance(64)  # Timer L
    assert layer.servers == {}


def test_2xx_without_ack_calls_on_ack_timeout(clocked, raw_udp):
    t, layer, clock = clocked
    timeouts: list[int] = []
    layer.on_request = lambda req, tx, peer: tx.retransmit_2xx_until_ack(
        tx.make_response(200), lambda: timeouts.append(1))
    phone = raw_udp()
    phone.send(sip_request("INVITE", branch="z9hG4bKnoack2"), t.port)
    assert parse_message(phone.recv()).status == 200
    times = sends_over(clock, phone, 64)
    assert times[:4] == [1, 3, 7, 11] and times[-1] <= 63
    assert timeouts == [1]
    assert sends_over(clock, phone, 80) == []
    assert layer.pending_acks == {} and layer.servers == {}


def test_cancel_for_unknown_transaction_gets_481(transports, raw_udp):
    t = transports()
    layer = TransactionLayer(t, T1=0.05)
    phone = raw_udp()
    phone.send(sip_request("CANCEL", branch="z9hG4bKnothing"), t.port)
    resp = parse_message(phone.recv())
    assert resp.status == 481 and str(resp.cseq) == "1 CANCEL"
    assert layer.stats.cancel_481 == 1
    layer.close()


def test_rfc2543_branchless_requests_matched_by_fields(clocked, raw_udp):
    t, layer, clock = clocked
    calls: list[str] = []

    def tu(req, tx, peer):
        calls.append(req.method)
        if tx is not None:
            tx.respond(tx.make_response(480))

    layer.on_request = tu
    phone = raw_udp()
    inv = sip_request("INVITE", via=f"SIP/2.0/UDP {LO}:{phone.port}")
    phone.send(inv, t.port)
    resp = parse_message(phone.recv())
    phone.send(inv, t.port)  # retransmission: matched without a branch
    assert parse_message(phone.recv()).status == 480
    phone.send(_ack_for(inv, resp), t.port)
    run_for(0.03)
    assert calls == ["INVITE"]
    assert [tx.state for tx in layer.servers.values()] == ["confirmed"]


# --- both ends ours ----------------------------------------------------------


def test_cancel_end_to_end_200_on_cancel_fires_and_487(transports):
    a, b = transports(), transports()
    uac = TransactionLayer(a, T1=0.02, T4=0.04, timer_d=0.1)
    uas = TransactionLayer(b, T1=0.02, T4=0.04)
    cancels: list[Request] = []
    server_tx: list[ServerTransaction] = []
    tu_calls: list[str] = []

    def on_cancel_factory(tx: ServerTransaction):
        def on_cancel(cancel: Request) -> None:
            cancels.append(cancel)
            tx.respond(tx.make_response(487))
        return on_cancel

    def uas_tu(req, tx, peer):
        tu_calls.append(req.method)
        if req.method == "INVITE":
            tx.on_cancel = on_cancel_factory(tx)
            server_tx.append(tx)
            tx.respond(tx.make_response(180))

    uas.on_request = uas_tu
    got: list[Response | None] = []
    cancel_got: list[Response | None] = []
    tx = uac.client(new_request("INVITE"), Peer("UDP", LO, b.port), lambda r, t: got.append(r))
    assert poll(lambda: any(r is not None and r.status == 180 for r in got))
    uac.cancel(tx, lambda r, t: cancel_got.append(r))
    assert poll(lambda: any(r is not None and r.status == 487 for r in got) and cancel_got)
    assert cancel_got[0].status == 200
    assert len(cancels) == 1
    ringing = [r for r in got if r.status == 180][0]
    assert cancel_got[0].to.tag == ringing.to.tag == got[-1].to.tag  # §9.2 same To tag
    assert poll(lambda: server_tx[0].state in ("confirmed", "terminated"))  # our ACK arrived
    assert tu_calls == ["INVITE"]  # CANCEL and the ACK for 487 never reach the TU
    # Timer D (0.1 s here), and Timer J (64*T1) for the CANCEL server transaction
    assert poll(lambda: not uac.clients and not uas.servers, timeout=3)
    uac.close()
    uas.close()


def test_tables_empty_after_1000_transactions(transports):
    a, b = transports(), transports()
    # Timer F = 64*T1 = 3.2 s: longer than a stall of the test machine (the loop runs due
    # timers before it reads the answers that queued meanwhile; with T1 = 20 ms a stall
    # took 95 of 1000 transactions to a 408)
    uac = TransactionLayer(a, T1=0.05, T4=0.04)
    uas = TransactionLayer(b, T1=0.05, T4=0.04)

    def uas_tu(req, tx, peer):
        if req.method == "OPTIONS":
            tx.respond(tx.make_response(200))
        elif req.method == "INVITE":
            if req.cseq.seq % 2:
                tx.respond(tx.make_response(486))
            else:
                tx.retransmit_2xx_until_ack(tx.make_response(200))

    uas.on_request = uas_tu
    finals: list[int] = []
    target = Peer("UDP", LO, b.port)

    def on_response(r: Response | None, tx: ClientTransaction) -> None:
        if r is None:
            finals.append(tx.failure)
            return
        if r.status < 200 or tx.duplicate:
            return
        finals.append(r.status)
        if r.status == 200 and tx.is_invite:  # the TU's ACK for a 2xx
            ack = Request("ACK", tx.request.uri, tx.request.headers.copy())
            ack.headers.remove("Via")
            ack.headers.add("Via", f"SIP/2.0/UDP {LO}:{a.port};branch=z9hG4bKack{tx.branch}")
            ack.headers.set("To", r.headers.get("To"))
            ack.headers.set("CSeq", f"{r.cseq.seq} ACK")
            a.send(ack, target)

    n = 0
    for batch in range(10):
        for i in range(100):
            n += 1
            method = "INVITE" if i < 10 else "OPTIONS"
            uac.client(new_request(method, call_id=f"c{n}@t", cseq=n), target, on_response)
        assert poll(lambda: len(finals) == n, timeout=3)
    assert finals.count(200) == 950 and finals.count(486) == 50
    assert poll(lambda: not (uac.clients or uas.servers or uas.pending_acks), timeout=8)  # Timer J = 3.2 s
    assert uas.stats.server_transactions == 1000
    assert uac.stats.timeouts == 0
    from twisted.internet import reactor

    ours = (ClientTransaction, ServerTransaction)
    leftover = [c for c in reactor.getDelayedCalls()
                if c.active() and isinstance(getattr(c.func, "__self__", None), ours)]
    assert leftover == []  # no timer outlives its transaction


# --- per-source bound on server transactions ----------------------------------


def test_one_address_cannot_hold_more_than_its_share_of_server_transactions(transports):
    """A UDP OPTIONS lives 64*T1 after its answer; one address sending them as fast as it can is
    answered 503 (Retry-After) statelessly beyond its share, while another address is served, and
    its share comes back as its transactions end."""
    t = transports()
    clock = Clock()
    layer = TransactionLayer(t, reactor=clock, T1=1.0, max_per_source=5, exempt=())
    served: list[str] = []

    def tu(request, tx, peer):
        served.append(peer.host)
        tx.respond(tx.make_response(200))

    layer.on_request = tu
    socks = []
    try:
        def phone(host: str) -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.settimeout(2)
            socks.append(s)
            return s

        flooder, other = phone("127.0.0.2"), phone("127.0.0.3")

        def ask(s: socket.socket, n: int) -> Response:
            host, port = s.getsockname()
            s.sendto(sip_request(via=f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKfl{host}-{n};rport",
                                 call_id=f"fl-{n}@{host}"), (LO, t.port))
            got: list[Response] = []
            assert poll(lambda: _recv_into(s, got), 2)
            return got[0]

        answers = [ask(flooder, n) for n in range(8)]
        assert [a.status for a in answers] == [200] * 5 + [503] * 3
        assert answers[-1].headers.get("Retry-After") == "10"
        assert layer.stats.overload_503 == 3 and layer.open_from("127.0.0.2") == 5
        assert ask(other, 0).status == 200                 # another address is served
        assert served.count("127.0.0.2") == 5              # the TU never saw the refused ones
        clock.advance(64 * 1.0 + 1)                        # Timer J: the transactions end
        assert layer.open_from("127.0.0.2") == 0
        assert ask(flooder, 100).status == 200
    finally:
        layer.close()
        for s in socks:
            s.close()


def test_loopback_through_a_dual_stack_socket_is_exempt_from_the_share():
    """Bound to ``::`` the kernel reports an IPv4 caller as ``::ffff:127.0.0.1``: a local proxy
    on loopback keeps its exemption there too, while a mapped outside address is counted as itself."""
    t = SipTransport("::", 0)
    t.start()
    clock = Clock()
    layer = TransactionLayer(t, reactor=clock, T1=1.0, max_per_source=2)
    layer.on_request = lambda request, tx, peer: tx.respond(tx.make_response(200))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.bind((LO, 0))
        host, port = s.getsockname()
        statuses = []
        for n in range(5):
            s.sendto(sip_request(via=f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKds-{n};rport",
                                 call_id=f"ds-{n}@{host}"), (LO, t.port))
            got: list[Response] = []
            assert poll(lambda: _recv_into(s, got), 2)
            statuses.append(got[0].status)
        assert statuses == [200] * 5, statuses
        assert layer.stats.overload_503 == 0
        assert layer._source("::ffff:192.0.2.7") == "192.0.2.7"
        from gateway.webrtc.whip import is_loopback        # plain HTTP's loopback privilege: the same rule

        assert is_loopback("::ffff:127.0.0.1") and not is_loopback("::ffff:192.0.2.7")
    finally:
        layer.close()
        s.close()
        wait(t.stop(), 3)


def _recv_into(s: socket.socket, out: list) -> bool:
    s.setblocking(False)
    try:
        out.append(parse_message(s.recv(65535)))
        return True
    except BlockingIOError:
        return False
