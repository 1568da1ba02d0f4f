"""SIP transport (RFC 3261 §18, RFC 3581, RFC 5626 keep-alive) on real loopback sockets."""
from __future__ import annotations

import socket
import time

import pytest
from twisted.internet.error import CannotListenError

from gateway.sip.message import (
    Request,
    Response,
    StreamFramer,
    make_response,
    parse_message,
)
from gateway.sip.transport import Peer, SipTransport
from tests.conftest import run_for, wait

LO = "127.0.0.1"


# --- helpers (also used by test_sip_transaction) -----------------------------


def sip_request(
    method: str = "OPTIONS",
    *,
    via: str | None = None,
    branch: str = "z9hG4bKtest1",
    call_id: str = "call-1@test",
    cseq: int = 1,
    cseq_method: str | None = None,
    to: str = "<sip:room@127.0.0.1>",
    from_tag: str = "ftag1",
    uri: str = "sip:room@127.0.0.1",
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    via = via or f"SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport"
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def poll(predicate, timeout: float = 2.0, step: float = 0.005) -> bool:
    """Run the reactor until predicate() is true (or timeout)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        run_for(step)
    return predicate()


class RawUdp:
    """A plain UDP socket playing the far end (not our stack)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LO, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (LO, port))

    def recv(self, timeout: float = 2.0) -> bytes | None:
        got: list[bytes] = []

        def ready() -> bool:
            try:
                got.append(self.sock.recv(70000))
                return True
            except BlockingIOError:
                return False

        poll(ready, timeout)
        return got[0] if got else None

    def drain(self, duration: float = 0.0) -> list[bytes]:
        """Everything that is (or arrives within ``duration``) in the socket."""
        if duration:
            run_for(duration)
        out = []
        while True:
            try:
                out.append(self.sock.recv(70000))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


class RawTcp:
    """A plain TCP client connection to our transport."""

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.create_connection((LO, port))
        self.sock = sock
        self.sock.setblocking(False)
        self.framer = StreamFramer()
        self.port = self.sock.getsockname()[1]
        self.raw = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def _pump(self) -> bool:
        try:
            chunk = self.sock.recv(70000)
        except BlockingIOError:
            return False
        if not chunk:
            self.raw += b"<EOF>"
            return True
        self.raw += chunk
        return True

    def recv_raw(self, predicate, timeout: float = 2.0) -> bytes:
        poll(lambda: (self._pump() or True) and predicate(bytes(self.raw)), timeout)
        return bytes(self.raw)

    def messages(self, count: int, timeout: float = 2.0) -> list[Request | Response]:
        out: list[Request | Response] = []

        def enough() -> bool:
            while self._pump():
                pass
            if self.raw:
                data = bytes(self.raw).replace(b"<EOF>", b"")
                self.raw.clear()
                for item in self.framer.feed(data):
                    if isinstance(item, bytes) and item != b"\r\n\r\n":
                        out.append(parse_message(item))
            return len(out) >= count

        poll(enough, timeout)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def transports():
    made: list[SipTransport] = []

    def make(**kw) -> SipTransport:
        t = SipTransport(LO, 0, **kw)
        t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        wait(t.stop(), 3)


@pytest.fixture
def raw_udp():
    socks: list[RawUdp] = []

    def make() -> RawUdp:
        s = RawUdp()
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


# --- listening ---------------------------------------------------------------


def test_udp_and_tcp_share_one_ephemeral_port_number(transports):
    t = transports()
    assert t.port > 0
    assert t._udp.getHost().port == t.port
    assert t._tcp.getHost().port == t.port
    assert t.local_host == LO


def test_busy_port_raises_cannot_listen(transports):
    t = transports()
    other = SipTransport(LO, t.port)
    with pytest.raises(CannotListenError):
        other.start()
    assert not other.listening


def test_tcp_busy_releases_the_udp_port_it_took():
    # occupy only the TCP side of a port number
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind((LO, 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        t = SipTransport(LO, port)
        with pytest.raises(CannotListenError):
            t.start()
        run_for(0.01)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LO, port))  # the UDP port it bound first was given back
        probe.close()
    finally:
        blocker.close()


# --- UDP ---------------------------------------------------------------------


def test_udp_request_and_response_between_two_transports(transports):
    a, b = transports(), transports()
    seen: list[tuple[Request, Peer]] = []
    answers: list[tuple[Response, Peer]] = []

    def on_request(req: Request, peer: Peer) -> None:
        seen.append((req, peer))
        b.send_response(make_response(req, 200), peer)

    b.on_request = on_request
    a.on_response = lambda resp, peer: answers.append((resp, peer))
    req = parse_message(sip_request(via=f"SIP/2.0/UDP {LO}:{a.port};branch=z9hG4bKab;rport"))
    a.send(req, Peer("UDP", LO, b.port))
    assert poll(lambda: answers)
    resp, peer = answers[0]
    assert resp.status == 200 and resp.call_id == "call-1@test"
    assert peer == Peer("UDP", LO, b.port)
    assert seen[0][1] == Peer("UDP", LO, a.port)
    # rport filled with the source port, received added because rport was asked for
    via = resp.top_via
    assert via.rport == a.port and via.received == LO
    assert a.stats.sent == 1 and b.stats.received == 1 and b.stats.sent == 1


def test_received_and_rport_added_and_response_goes_to_rport(transports, raw_udp):
    b = transports()
    seen: list[Request] = []

    def on_request(req: Request, peer: Peer) -> None:
        seen.append(req)
        b.send_response(make_response(req, 200), peer)

    b.on_request = on_request
    phone = raw_udp()
    # behind a NAT: sent-by names a host and port we cannot reach
    phone.send(sip_request(via="SIP/2.0/UDP phone.example.invalid:5999;rport;branch=z9hG4bKn1"), b.port)
    data = phone.recv()
    assert data is not None, "the response must go to the source port (rport), not 5999"
    via = seen[0].top_via
    assert via.received == LO
    assert via.rport == phone.port
    resp = parse_message(data)
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.top_via.params["rport"] == str(phone.port)


def test_without_rport_response_goes_to_sent_by_port(transports, raw_udp):
    b = transports()
    seen: list[Request] = []

    def on_request(req: Request, peer: Peer) -> None:
        seen.append(req)
        b.send_response(make_response(req, 200), peer)

    b.on_request = on_request
    sender, listener = raw_udp(), raw_udp()
    sender.send(sip_request(via=f"SIP/2.0/UDP {LO}:{listener.port};branch=z9hG4bKn2"), b.port)
    assert listener.recv() is not None
    assert sender.drain(0.05) == []
    via = seen[0].top_via
    assert "received" not in via.params and "rport" not in via.params  # same IP, no rport


def test_received_added_when_sent_by_is_a_name(transports, raw_udp):
    b = transports()
    seen: list[Request] = []
    b.on_request = lambda req, peer: seen.append(req)
    phone = raw_udp()
    phone.send(sip_request(via="SIP/2.0/UDP pc33.example.com;branch=z9hG4bKn3"), b.port)
    assert poll(lambda: seen)
    assert seen[0].top_via.received == LO
    assert seen[0].top_via.rport is None


def test_garbage_request_gets_400_with_reason_and_warning_and_serving_continues(transports, raw_udp):
    b = transports()
    seen: list[Request] = []
    b.on_request = lambda req, peer: seen.append(req)
    phone = raw_udp()
    phone.send(sip_request().replace(b"Max-Forwards: 70", b"Max-Forwards: seventy"), b.port)
    data = phone.recv()
    assert data is not None
    resp = parse_message(data)
    assert resp.status == 400
    assert "Max-Forwards" in resp.reason
    warning = resp.headers.get("Warning")
    assert warning.startswith('399 cau "') and "Max-Forwards" in warning
    assert resp.call_id == "call-1@test" and resp.top_via.branch == "z9hG4bKtest1"
    # a bad CSeq is copied as received (the sender can still match it)
    phone.send(sip_request(branch="z9hG4bKcs").replace(b"CSeq: 1", b"CSeq: x1"), b.port)
    raw = phone.recv()
    assert raw.startswith(b"SIP/2.0 400 Bad CSeq")
    assert b"\r\nCSeq: x1 OPTIONS\r\n" in raw and b'Warning: 399 cau "Bad CSeq' in raw
    assert seen == []
    # unreadable junk with no Via: dropped, nothing sent
    phone.send(b"hello there\r\n\r\n", b.port)
    phone.send(b"\x00\xff\xfe garbage", b.port)
    assert phone.drain(0.05) == []
    # and a good request still gets through
    phone.send(sip_request(branch="z9hG4bKgood"), b.port)
    assert poll(lambda: seen)
    assert b.stats.parse_errors == 4
    assert b.stats.answered_400 == 2
    assert b.stats.dropped == 2


def test_missing_call_id_gets_400_naming_it(transports, raw_udp):
    b = transports()
    phone = raw_udp()
    bad = sip_request().replace(b"Call-ID: call-1@test\r\n", b"")
    phone.send(bad, b.port)
    raw = phone.recv()
    # the answer copies what there is (no Call-ID to copy), so read it as text
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line == b"SIP/2.0 400 Missing Call-ID"
    assert b'\r\nWarning: 399 cau "Missing Call-ID"\r\n' in b"\r\n" + rest
    assert b"branch=z9hG4bKtest1" in rest and b"CSeq: 1 OPTIONS" in rest


def test_unsupported_version_gets_505(transports, raw_udp):
    b = transports()
    phone = raw_udp()
    phone.send(sip_request().replace(b"room@127.0.0.1 SIP/2.0", b"room@127.0.0.1 SIP/7.0"), b.port)
    resp = parse_message(phone.recv())
    assert resp.status == 505


def test_malformed_response_dropped_and_counted(transports, raw_udp):
    b = transports()
    got: list[Response] = []
    b.on_response = lambda r, p: got.append(r)
    phone = raw_udp()
    phone.send(b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n", b.port)
    phone.send(b"\r\n", b.port)  # a bare CRLF keep-alive on UDP is ignored
    assert poll(lambda: b.stats.parse_errors == 1)
    run_for(0.02)
    assert got == [] and b.stats.dropped == 1
    assert b.stats.keepalives == 1
    assert phone.drain() == []


def test_callback_exception_does_not_break_the_transport(transports, raw_udp):
    b = transports()
    calls: list[int] = []

    def boom(req, peer):
        calls.append(1)
        raise RuntimeError("TU bug")

    b.on_request = boom
    phone = raw_udp()
    phone.send(sip_request(branch="z9hG4bK1"), b.port)
    phone.send(sip_request(branch="z9hG4bK2"), b.port)
    assert poll(lambda: len(calls) == 2)


# --- TCP ---------------------------------------------------------------------


def test_tcp_split_and_coalesced_writes_and_responses_on_same_connection(transports):
    b = transports()
    seen: list[tuple[Request, Peer]] = []

    def on_request(req: Request, peer: Peer) -> None:
        seen.append((req, peer))
        b.send_response(make_response(req, 200), peer)

    b.on_request = on_request
    conn = RawTcp(b.port)
    via = f"SIP/2.0/TCP {LO}:1;branch=%s"
    one = sip_request(via=via % "z9hG4bKs1", body=b"v=0\r\n")
    for piece in (one[:10], one[10:100], one[100:-2], one[-2:]):
        conn.send(piece)
        run_for(0.01)
    two = sip_request(via=via % "z9hG4bKs2", cseq=2) + sip_request(via=via % "z9hG4bKs3", cseq=3)
    conn.send(two)
    answers = conn.messages(3)
    assert [r.status for r in answers] == [200, 200, 200]
    assert [r.cseq.seq for r in answers] == [1, 2, 3]
    assert seen[0][0].body == b"v=0\r\n"
    assert seen[0][1] == Peer("TCP", LO, conn.port)
    assert seen[0][0].top_via.received is None  # sent-by has the source IP, no rport
    conn.close()


def test_tcp_keepalive_ping_gets_pong(transports):
    b = transports()
    conn = RawTcp(b.port)
    conn.send(b"\r\n\r\n")
    assert conn.recv_raw(lambda d: d == b"\r\n") == b"\r\n"
    assert b.stats.keepalives == 1
    conn.close()


def test_tcp_missing_content_length_answered_400_then_closed(transports):
    b = transports()
    conn = RawTcp(b.port)
    bad = sip_request(via=f"SIP/2.0/TCP {LO}:1;branch=z9hG4bKcl").replace(b"Content-Length: 0\r\n", b"")
    conn.send(bad)
    data = conn.recv_raw(lambda d: d.endswith(b"<EOF>"))
    resp = parse_message(data.replace(b"<EOF>", b""))
    assert resp.status == 400 and "Content-Length" in resp.reason
    conn.close()


def test_tcp_between_two_transports_reuses_the_connection(transports):
    a, b = transports(), transports()
    answers: list[Response] = []
    seen: list[Peer] = []

    def on_request(req: Request, peer: Peer) -> None:
        seen.append(peer)
        b.send_response(make_response(req, 200), peer)

    b.on_request = on_request
    a.on_response = lambda r, p: answers.append(r)
    target = Peer("TCP", LO, b.port)
    for n in (1, 2):
        req = parse_message(sip_request(via=f"SIP/2.0/TCP {LO}:{a.port};branch=z9hG4bKt{n}", cseq=n))
        a.send(req, target)  # the second is queued or reuses the connection
    assert poll(lambda: len(answers) == 2)
    assert len(set(seen)) == 1, "both requests on one connection"
    assert a.connection_open(target)
    assert len(a._connections) == 1 and len(b._connections) == 1


def test_tcp_connect_failure_reported(transports):
    a = transports()
    dead = socket.socket()
    dead.bind((LO, 0))
    port = dead.getsockname()[1]
    dead.close()  # nobody listens there
    errors: list[str] = []
    req = parse_message(sip_request(via=f"SIP/2.0/TCP {LO}:{a.port};branch=z9hG4bKdead"))
    a.send(req, Peer("TCP", LO, port), errors.append)
    assert poll(lambda: errors)
    assert "failed" in errors[0]
    assert a._pending == {}


def test_tcp_response_falls_back_to_sent_by_when_connection_closed(transports):
    """§18.2.2: connection gone → open one to received/sent-by port."""
    b = transports()
    held: list[tuple[Request, Peer]] = []
    b.on_request = lambda req, peer: held.append((req, peer))
    listener = socket.socket()
    listener.bind((LO, 0))
    listener.listen(1)
    listener.setblocking(False)
    lport = listener.getsockname()[1]
    conn = RawTcp(b.port)
    conn.send(sip_request(via=f"SIP/2.0/TCP {LO}:{lport};branch=z9hG4bKfb"))
    assert poll(lambda: held)
    conn.close()
    assert poll(lambda: not b._connections)
    req, peer = held[0]
    b.send_response(make_response(req, 200), peer)
    accepted: list[socket.socket] = []

    def accept() -> bool:
        try:
            accepted.append(listener.accept()[0])
            return True
        except BlockingIOError:
            return False

    assert poll(accept)
    back = RawTcp(0, accepted[0])
    assert back.messages(1)[0].status == 200
    back.close()
    listener.close()


def test_stop_closes_connections(transports):
    b = SipTransport(LO, 0)
    b.start()
    conn = RawTcp(b.port)
    conn.send(b"\r\n\r\n")
    conn.recv_raw(lambda d: d == b"\r\n")
    wait(b.stop(), 3)
    assert conn.recv_raw(lambda d: d.endswith(b"<EOF>")).endswith(b"<EOF>")
    assert not b.listening
    conn.close()
