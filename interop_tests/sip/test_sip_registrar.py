"""Cases for a SIP registrar (``--profile sip-registrar --sip-target HOST:PORT --user U --password P``):
challenge, digest registration, the bindings a 200 lists, un-registering and too-brief expiries
(RFC 3261 §10, §22; RFC 7616). The suite is the registering UA, over UDP from loopback or the lab's
address; against Cầu the suite's own accounts are used."""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

import pytest

from gateway.sip import digest
from interop_tests.verdicts import not_applicable


@dataclass
class Answer:
    status: int
    text: str

    def headers(self, name: str) -> list[str]:
        head = self.text.split("\r\n\r\n", 1)[0]
        out = []
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == name.lower():
                out.append(v.strip())
        return out

    def contacts(self) -> list[str]:
        """Every Contact value (comma-separated ones split outside <>)."""
        out = []
        for v in self.headers("contact") + self.headers("m"):
            out += [c.strip() for c in re.split(r",(?![^<]*>)", v) if c.strip()]
        return out


class Registrant:
    """A UA registering ``user`` at the target, with its own UDP socket (the Contact)."""

    def __init__(self, target, user: str) -> None:
        self.target, self.user = target, user
        self.sock = socket.socket(socket.AF_INET6 if ":" in target.host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if target.host.startswith("127.") else "", 0))
        self.port = self.sock.getsockname()[1]
        self.me = "127.0.0.1" if target.host.startswith("127.") else socket.gethostbyname(socket.gethostname())
        self.call_id = f"reg-{os.urandom(6).hex()}@{self.me}"
        self.cseq = 0
        self.contact = f"<sip:{user}@{self.me}:{self.port}>"

    def close(self) -> None:
        self.sock.close()

    def register(self, *, contact: str | None = "", expires: int | None = 300, auth: str | None = None,
                 extra: str = "") -> Answer:
        self.cseq += 1
        t = self.target
        branch = "z9hG4bK" + os.urandom(8).hex()
        lines = [f"REGISTER sip:{t.host}:{t.sip_port} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.me}:{self.port};rport;branch={branch}", "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{t.host}>;tag=r{self.port}", f"To: <sip:{self.user}@{t.host}>",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} REGISTER", "User-Agent: cau-conformance"]
        if contact is not None:
            lines.append(f"Contact: {contact or self.contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth:
            lines.append(f"Authorization: {auth}")
        data = ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()
        return self._final(data)

    def _final(self, data: bytes) -> Answer:
        """Send with RFC 3261 Timer E retransmissions until a final answer (or 8 s: no answer)."""
        deadline, interval, next_send = time.monotonic() + 8.0, 0.5, 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self.sock.sendto(data, (self.target.host, self.target.sip_port))
                next_send, interval = time.monotonic() + interval, min(interval * 2, 4.0)
            self.sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                text = self.sock.recv(65535).decode("utf-8", "replace")
            except OSError:
                continue
            m = re.match(r"SIP/2\.0 (\d{3})", text)
            if m and int(m.group(1)) >= 200 and f"CSeq: {self.cseq} REGISTER".lower() in text.lower():
                return Answer(int(m.group(1)), text)
        raise AssertionError("the registrar gave no final answer to REGISTER within 8 s")

    def register_with(self, password: str, **kw) -> Answer:
        """REGISTER, and answer a challenge with ``password`` (RFC 3261 §22.2)."""
        first = self.register(**kw)
        if first.status not in (401, 407):
            return first
        challenge = digest.best_challenge(first.headers("www-authenticate") + first.headers("proxy-authenticate"))
        assert challenge is not None, f"no usable Digest challenge in the {first.status}: {first.text[:600]}"
        t = self.target
        return self.register(auth=digest.authorization(challenge, "REGISTER", f"sip:{t.host}:{t.sip_port}",
                                                       self.user, password), **kw)


@pytest.fixture
def account(target, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(user, password) of an account on the registrar: ``--user``/``--password``, or one of the
    suite's own dial plan against the Cầu it started."""
    user, password = request.config.getoption("--user"), request.config.getoption("--password")
    if user and password:
        return user, password
    if target.is_local_cau:
        return "pjsua-b", target.users["pjsua-b"]
    if not target.sip_port:
        pytest.skip("NOT APPLICABLE: the target has no SIP address (--sip-target)")
    not_applicable("no account given: run with --user USER --password PASSWORD of an account on the registrar")


@pytest.fixture
def registrant(target, account):
    made: list[Registrant] = []

    def make() -> Registrant:
        r = Registrant(target, account[0])
        made.append(r)
        return r

    yield make
    for r in made:
        try:
            r.register_with(account[1], contact=r.contact, expires=0)     # leave no binding behind
        except AssertionError:
            pass
        r.close()


def _our_binding(answer: Answer, r: Registrant) -> str | None:
    for c in answer.contacts():
        if f"@{r.me}:{r.port}" in c:
            return c
    return None


def test_a_register_without_credentials_is_challenged(target, account, registrant):
    r = registrant()
    a = r.register()
    assert a.status in (401, 407), f"REGISTER without credentials answered {a.status} (expected a 401 challenge)"
    challenge = digest.best_challenge(a.headers("www-authenticate") + a.headers("proxy-authenticate"))
    assert challenge is not None, f"the {a.status} carries no usable Digest challenge: {a.headers('www-authenticate')}"
    params = digest.parse_challenge(challenge)
    assert params.get("realm") and params.get("nonce"), params


def test_a_registration_is_listed_and_removed_with_expires_0(target, account, registrant):
    r = registrant()
    ok = r.register_with(account[1], expires=300)
    assert ok.status == 200, f"registering with the right password answered {ok.status}"
    ours = _our_binding(ok, r)
    assert ours is not None, f"the 200 does not list our binding {r.contact}: {ok.contacts()}"    # §10.3 step 8
    m = re.search(r";\s*expires=(\d+)", ours) or (re.match(r"(\d+)", ok.headers("expires")[0])
                                                   if ok.headers("expires") else None)
    assert m is not None and 0 < int(m.group(1)) <= 300, f"the binding's expiry: {ours}"
    query = r.register_with(account[1], contact=None, expires=None)         # §10.2.3: a query
    assert query.status == 200 and _our_binding(query, r) is not None, (query.status, query.contacts())
    gone = r.register_with(account[1], contact="*", expires=0)              # §10.2.2: remove all
    assert gone.status == 200, f"REGISTER Contact: * Expires: 0 answered {gone.status}"
    assert _our_binding(gone, r) is None, f"our binding is still listed: {gone.contacts()}"
    after = r.register_with(account[1], contact=None, expires=None)
    assert _our_binding(after, r) is None, f"our binding is still listed: {after.contacts()}"


def test_a_too_brief_registration_gets_423_with_min_expires_or_is_accepted(target, account, registrant):
    r = registrant()
    a = r.register_with(account[1], expires=1)
    if a.status == 423:
        mins = a.headers("min-expires")
        assert mins and mins[0].isdigit() and int(mins[0]) > 1, f"423 without a usable Min-Expires: {mins}"  # §10.3 step 7
        again = r.register_with(account[1], expires=int(mins[0]))
        assert again.status == 200, f"registering for Min-Expires ({mins[0]} s) answered {again.status}"
    else:
        assert a.status == 200, f"REGISTER with Expires: 1 answered {a.status} (expected 423 with Min-Expires, or 200)"


def test_a_wrong_password_does_not_register(target, account, registrant):
    r = registrant()
    bad = r.register_with(account[1] + "-not", expires=300)
    assert bad.status in (401, 403, 407), f"a wrong password answered {bad.status}"
    check = r.register_with(account[1], contact=None, expires=None)
    assert check.status == 200 and _our_binding(check, r) is None, \
        f"the wrong password's binding is listed: {check.contacts()}"
