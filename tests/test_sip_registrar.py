"""The SIP registrar (RFC 3261 §10.3) over real loopback UDP, with digest auth."""
from __future__ import annotations

import hashlib
import subprocess
import textwrap
from pathlib import Path

import pytest

from gateway.dialplan import parse_dialplan
from gateway.sip.digest import DigestServer, parse_challenge
from gateway.sip.message import Response, parse_message
from gateway.sip.registrar import Registrar
from gateway.sip.transaction import TransactionLayer
from gateway.sip.transport import SipTransport
from tests.conftest import free_port, run_for, wait
from tests.test_sip_transport import LO, RawUdp, poll

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "interop_tests" / "peers" / "scenarios" / "uac_register_auth.xml"

PLAN = textwrap.dedent("""\
    version: 1
    endpoints:
      - alias: phong-hop
        number: "8201"
        protocol: sip
        password: "s3cret"
        networks: ["127.0.0.0/8"]
      - alias: mo
        protocol: sip
      - alias: h323-box
        protocol: h323
      - alias: far-away
        protocol: sip
        networks: ["10.0.0.0/8"]
      - alias: khac
        protocol: sip
        username: "user-khac"
        password: "pw2"
""")


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


class Env:
    def __init__(self, **kw) -> None:
        self.plan = parse_dialplan(PLAN)
        self.clock = Clock()
        self.transport = SipTransport(LO, 0)
        self.transport.start()
        self.layer = TransactionLayer(self.transport)
        self.registrar = Registrar(lambda: self.plan, clock=self.clock, **kw)
        self.layer.on_request = self._on_request
        self.port = self.transport.port
        self.ua = RawUdp()
        self.n = 0

    def _on_request(self, request, stx, peer):
        if request.method == "REGISTER":
            self.registrar.on_register(request, stx, peer)
        elif stx is not None:
            stx.respond(stx.make_response(405))

    def close(self) -> None:
        self.ua.close()
        self.registrar.close()
        self.layer.close()
        wait(self.transport.stop())

    def register(self, user="phong-hop", contact: str | None = "default", expires: str | None = None,
                 auth: str | None = None, call_id="reg-1@ua", cseq: int | None = None,
                 extra: str = "") -> Response:
        self.n += 1
        if cseq is None:
            cseq = self.n
        uri = f"sip:{LO}:{self.port}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {LO}:{self.ua.port};branch=z9hG4bKreg{self.n};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{LO}>;tag=ft{self.n}",
            f"To: <sip:{user}@{LO}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
        ]
        if contact == "default":
            contact = f"<sip:{user}@{LO}:{self.ua.port}>"
        if contact is not None:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        if extra:
            lines.append(extra)
        lines.append("Content-Length: 0")
        self.ua.send(("\r\n".join(lines) + "\r\n\r\n").encode(), self.port)
        data = self.ua.recv(2.0)
        assert data is not None, "no answer from the registrar"
        msg = parse_message(data)
        assert isinstance(msg, Response)
        return msg

    def authorised(self, user="phong-hop", password="s3cret", index=0, username=None, **kw) -> Response:
        """REGISTER, take the 401's challenge number ``index``, answer it."""
        r = self.register(user=user, **kw)
        assert r.status == 401, (r.status, r.reason)
        return self.answer(r, user, password, index, username, **kw)

    def answer(self, r401: Response, user, password, index=0, username=None, nc=1, **kw) -> Response:
        ch = parse_challenge(r401.headers.get_all("WWW-Authenticate")[index])
        return self.register(user=user, auth=creds(ch, username or user, password,
                                                   f"sip:{LO}:{self.port}", nc), **kw)


def creds(ch: dict, user: str, password: str, uri: str, nc: int = 1) -> str:
    """Independent digest computation (RFC 7616 §3.4.1), with hashlib."""
    algo = ch["algorithm"]
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algo]

    def H(s: str) -> str:
        return h(s.encode()).hexdigest()

    ncs, cnonce = f"{nc:08x}", "d0e1f2"
    realm, nonce = ch["realm"], ch["nonce"]
    ha1 = H(f"{user}:{realm}:{password}")
    ha2 = H(f"REGISTER:{uri}")
    resp = H(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{ch["realm"]}", nonce="{ch["nonce"]}", '
            f'uri="{uri}", response="{resp}", algorithm={algo}, qop=auth, nc={ncs}, '
            f'cnonce="{cnonce}", opaque="{ch["opaque"]}"')


@pytest.fixture
def env():
    e = Env()
    yield e
    e.close()


def contacts(r: Response) -> dict[str, int]:
    return {str(a.uri): int(a.params["expires"]) for a in r.contacts}


# --- authentication ---------------------------------------------------------------


@pytest.mark.parametrize("index,algo", [(0, "SHA-256"), (1, "MD5")])
def test_challenge_then_register(env, index, algo):
    r = env.register(expires="600")
    assert r.status == 401
    chs = [parse_challenge(v) for v in r.headers.get_all("WWW-Authenticate")]
    assert [c["algorithm"] for c in chs] == ["SHA-256", "MD5"]
    assert all(c["realm"] == "cau" and c["qop"] == "auth" for c in chs)
    assert env.registrar.lookup("phong-hop") == []

    r = env.answer(r, "phong-hop", "s3cret", index, expires="600")
    assert (r.status, r.reason) == (200, "OK")
    assert contacts(r) == {f"sip:phong-hop@{LO}:{env.ua.port}": 600}
    assert r.headers.get("Date", "").endswith("GMT")
    assert r.to.tag

    by_alias = env.registrar.lookup("phong-hop")
    by_number = env.registrar.lookup("8201")
    assert len(by_alias) == 1 and by_alias == by_number
    b = by_alias[0]
    assert b.aor == "phong-hop" and b.call_id == "reg-1@ua" and b.source.port == env.ua.port
    assert b.expires_at == env.clock.t + 600 and "expires" not in b.contact.params


def test_wrong_password_is_403(env):
    r = env.authorised(password="wrong")
    assert (r.status, r.reason) == (403, "Forbidden")
    assert env.registrar.lookup("phong-hop") == []


def test_wrong_user_name_is_403(env):
    # khac's username is "user-khac": credentials for its alias are not enough
    r = env.authorised(user="khac", password="pw2")
    assert (r.status, r.reason) == (403, "Forbidden")
    r = env.authorised(user="khac", password="pw2", username="user-khac")
    assert r.status == 200 and len(env.registrar.lookup("khac")) == 1


def test_stale_nonce_gets_stale_challenge(env):
    r401 = env.register()
    env.clock.t += 301  # nonce lifetime is 300 s
    r = env.answer(r401, "phong-hop", "s3cret")
    assert r.status == 401
    assert all(parse_challenge(v)["stale"] == "true" for v in r.headers.get_all("WWW-Authenticate"))
    r = env.answer(r, "phong-hop", "s3cret")
    assert r.status == 200


def test_replayed_credentials_are_not_accepted(env):
    r401 = env.register()
    assert env.answer(r401, "phong-hop", "s3cret", expires="600").status == 200
    # the same nonce and nc again (new transaction): a replay, answered with a fresh challenge
    r = env.answer(r401, "phong-hop", "s3cret", expires="0")
    assert r.status == 401 and "stale=true" in r.headers.get("WWW-Authenticate")
    assert len(env.registrar.lookup("phong-hop")) == 1
    # the next nc on the same nonce is fine (refresh without a new 401)
    assert env.answer(r401, "phong-hop", "s3cret", nc=2, expires="0").status == 200


def test_endpoint_without_password_is_not_challenged(env):
    r = env.register(user="mo")
    assert r.status == 200
    assert contacts(r) == {f"sip:mo@{LO}:{env.ua.port}": 3600}


def test_bad_credentials_400(env):
    r = env.register(auth='Digest username="phong-hop", realm="cau", nonce="x"')
    assert r.status == 400 and "missing" in r.reason


# --- who may register -----------------------------------------------------------------


@pytest.mark.parametrize("user, why", [("nobody", "unknown endpoint nobody"),
                                       ("h323-box", "h323-box is not a SIP endpoint"),
                                       ("far-away", "far-away is not allowed from 127.0.0.1")])
def test_who_may_not_register_learns_nothing_about_who_exists(env, user, why, caplog):
    """An unknown endpoint, an H.323 one, one from a network it is not allowed from: each is
    challenged like a real endpoint, then refused with the same 403 whatever the password;
    the operator's log says why."""
    import logging

    r401 = env.register(user=user)
    assert r401.status == 401 and r401.headers.get_all("WWW-Authenticate")
    with caplog.at_level(logging.INFO, logger="cau.sip.registrar"):
        r = env.answer(r401, user, "any-password")
    assert (r.status, r.reason) == (403, "Forbidden")
    assert why in caplog.text
    real = env.answer(env.register(), "phong-hop", "wrong")
    assert (real.status, real.reason) == (r.status, r.reason), "a real endpoint's refusal looks different"


def test_require_is_refused_420(env):
    r = env.register(user="mo", extra="Require: gruu")
    assert r.status == 420 and r.headers.get("Unsupported") == "gruu"


# --- bindings ---------------------------------------------------------------------------


def test_refresh_query_and_remove(env):
    assert env.authorised(expires="600").status == 200
    env.clock.t += 100
    r = env.register(user="mo", contact=None)  # a query of another AOR: nothing
    assert r.status == 200 and r.contacts == []
    # query: no Contact; still authenticated
    r = env.authorised(contact=None)
    assert r.status == 200 and contacts(r) == {f"sip:phong-hop@{LO}:{env.ua.port}": 500}
    # refresh with a per-contact expires (overrides the header) and a second contact
    second = f"<sip:phong-hop@{LO}:6000>"
    first = f"<sip:phong-hop@{LO}:{env.ua.port}>"
    r = env.authorised(contact=f"{first}, {second};expires=1200;q=0.5", expires="900")
    assert r.status == 200
    assert contacts(r) == {f"sip:phong-hop@{LO}:{env.ua.port}": 900, f"sip:phong-hop@{LO}:6000": 1200}
    found = env.registrar.lookup("8201")
    assert [b.q for b in found] == [None, 0.5]
    # Expires: 0 removes one contact
    r = env.authorised(contact=second, expires="0")
    assert contacts(r) == {f"sip:phong-hop@{LO}:{env.ua.port}": 900}
    # Contact: * with Expires: 0 removes all
    r = env.authorised(contact="*", expires="0")
    assert r.status == 200 and r.contacts == []
    assert env.registrar.lookup("phong-hop") == [] and "phong-hop" not in env.registrar.bindings


def test_star_contact_rules(env):
    r = env.register(user="mo", contact="*", expires="60")
    assert r.status == 400 and "Expires: 0" in r.reason
    r = env.register(user="mo", contact="*", expires="0", extra=f"Contact: <sip:mo@{LO}>")
    assert r.status == 400


def test_too_brief_423_and_cap(env):
    r = env.register(user="mo", expires="30")
    assert (r.status, r.reason) == (423, "Interval Too Brief")
    assert r.headers.get("Min-Expires") == "60"
    r = env.register(user="mo", contact=f"<sip:mo@{LO}:7000>;expires=10")
    assert r.status == 423
    assert env.registrar.lookup("mo") == []
    r = env.register(user="mo", expires="100000")
    assert r.status == 200 and list(contacts(r).values()) == [7200]


def test_bad_expires_400(env):
    assert env.register(user="mo", expires="soon").status == 400
    assert env.register(user="mo", contact=f"<sip:mo@{LO}>;q=7").status == 400
    assert env.register(user="mo", contact="<tel:+84123>").status == 400


def test_out_of_order_cseq_500(env):
    assert env.register(user="mo", cseq=10).status == 200
    r = env.register(user="mo", cseq=9, expires="0")
    assert r.status == 500 and "out-of-order" in r.reason
    assert len(env.registrar.lookup("mo")) == 1
    # another Call-ID (a rebooted phone) replaces the binding whatever its CSeq
    assert env.register(user="mo", cseq=1, call_id="reboot@ua").status == 200
    (b,) = env.registrar.lookup("mo")
    assert (b.call_id, b.cseq) == ("reboot@ua", 1)


def test_bindings_expire(env):
    assert env.register(user="mo", expires="120").status == 200
    env.clock.t += 119
    assert len(env.registrar.lookup("mo")) == 1
    env.clock.t += 2
    assert env.registrar.lookup("mo") == []
    assert "mo" not in env.registrar.bindings


def test_expiry_timer_on_the_reactor():
    import time

    from twisted.internet import reactor

    e = Env(min_expires=1, default_expires=1)
    e.registrar.clock = time.monotonic
    e.registrar.reactor = reactor
    try:
        assert e.register(user="mo", expires="1").status == 200
        assert "mo" in e.registrar.bindings
        assert poll(lambda: "mo" not in e.registrar.bindings, timeout=3.0)
    finally:
        e.close()


def test_garbage_is_answered_not_raised(env):
    r = env.register(user="mo", contact=f"<sip:mo@{LO}>;expires=99999999999999999999")
    assert r.status == 200 and list(contacts(r).values()) == [7200]
    r = env.register(auth="Digest ,,,", user="mo")
    assert r.status == 200  # no password: credentials are not looked at


# --- independent client: SIPp ---------------------------------------------------------


def test_sipp_registers_with_digest():
    # SIPp 3.6 reads only the first WWW-Authenticate and knows MD5 only (it
    # gives up on "algorithm=SHA-256"): an MD5-only registrar is the setting
    # for such clients.
    e = Env(digest=DigestServer("cau", algorithms=("MD5",)))
    try:
        port = free_port("udp")
        cmd = ["sipp", "-sf", str(SCENARIO), "-s", "phong-hop", f"{LO}:{e.port}",
               "-au", "phong-hop", "-ap", "s3cret", "-m", "1", "-nostdin",
               "-i", LO, "-p", str(port), "-timeout", "15", "-timeout_error"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd="/tmp")
        try:
            poll(lambda: proc.poll() is not None, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
        assert proc.returncode == 0, out[-3000:]
        (b,) = e.registrar.lookup("8201")
        assert b.contact.uri.port == port
        run_for(0.01)
    finally:
        e.close()


# --- independent client: PJSIP 2.15 (pjsua2), which speaks SHA-256 digest ---------------

PJSUA_REGISTER = r'''
import json, os, sys, time
import pjsua2 as pj
port, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
ep = pj.Endpoint(); ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0; cfg.uaConfig.mainThreadOnly = True
cfg.logConfig.level = 0; cfg.logConfig.consoleLevel = 0
cfg.medConfig.hasIoqueue = True; cfg.medConfig.threadCnt = 0
ep.libInit(cfg)
t = pj.TransportConfig(); t.port = 0; t.boundAddress = "127.0.0.1"; t.publicAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, t)
ep.libStart(); ep.audDevManager().setNullDev()
class Acc(pj.Account):
    code = None
    def onRegState(self, prm):
        if prm.code // 100 != 1:
            self.code = prm.code
            print(json.dumps({"code": prm.code, "reason": prm.reason, "expiration": prm.expiration}), flush=True)
ac = pj.AccountConfig()
ac.idUri = f"sip:{user}@127.0.0.1"
ac.regConfig.registrarUri = f"sip:127.0.0.1:{port}"
ac.regConfig.timeoutSec = 300
ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
acc = Acc(); acc.create(ac)
end = time.time() + 10
while acc.code is None and time.time() < end:
    ep.libHandleEvents(20)
os._exit(0 if acc.code == 200 else 1)
'''


def run_pjsua_register(env: Env, user: str, password: str) -> tuple[int, str]:
    import sys

    proc = subprocess.Popen([sys.executable, "-c", PJSUA_REGISTER, str(env.port), user, password],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/tmp")
    try:
        poll(lambda: proc.poll() is not None, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    return proc.returncode, out


@pytest.mark.parametrize("algorithms", [("SHA-256",), ("SHA-256", "MD5")])
def test_pjsua_registers_with_sha256(algorithms):
    seen: list[str | None] = []
    e = Env(digest=DigestServer("cau", algorithms=algorithms))
    verify = e.registrar.digest.verify

    def spy(request, password_for, header="Authorization"):
        result = verify(request, password_for, header)
        seen.append(result.algorithm)
        return result

    e.registrar.digest.verify = spy  # type: ignore[method-assign]
    try:
        code, out = run_pjsua_register(e, "phong-hop", "s3cret")
        assert code == 0, out[-2000:]
        assert '"code": 200' in out
        assert seen and seen[-1] == "SHA-256"   # the first (preferred) challenge, RFC 8760
        (b,) = e.registrar.lookup("phong-hop")
        assert b.expires_at > e.clock.t
        code, out = run_pjsua_register(e, "phong-hop", "not-it")
        assert code == 1 and '"code": 403' in out, out[-2000:]
    finally:
        e.close()


def test_password_guessing_is_locked_out_and_made_up_nonces_test_nothing(env):
    """The finding: a wrong password answered 403 even on a made-up nonce, so passwords could be
    tested at 336/s. Now a nonce we never issued gets a fresh challenge before any password is
    looked at, and twenty wrong passwords lock the account for every address that has not logged
    in to it lately (even the right password gets 403). (Loopback is no address of its own: the
    per-address limit, ten, is tested in tests/test_guard.py.)"""
    r401 = env.register()
    ch = parse_challenge(r401.headers.get_all("WWW-Authenticate")[0])
    made_up = dict(ch, nonce="QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE")
    for _ in range(30):
        r = env.register(auth=creds(made_up, "phong-hop", "guess", f"sip:{LO}:{env.port}"))
        assert r.status == 401, "a made-up nonce must not get a verdict on the password"
    assert env.registrar.guard.stats["failures"] == 0
    for i in range(20):
        assert env.answer(env.register(), "phong-hop", f"guess-{i}").status == 403
    r = env.answer(env.register(), "phong-hop", "s3cret")
    assert r.status == 403, "the right password got in while the account is locked"
    assert not env.registrar.lookup("phong-hop")
    alarms = env.registrar.guard.alarms()
    assert alarms and alarms[0]["secret"] == "password" and alarms[0]["locked"]
    assert alarms[0]["kind"] == "target" and alarms[0]["name"] == "account phong-hop"
