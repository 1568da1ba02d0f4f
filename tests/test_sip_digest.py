"""SIP digest authentication (RFC 7616, RFC 2617, RFC 8760): both sides.

Expected responses are computed here with hashlib, straight from RFC 7616
§3.4.1, never with the module's own hash code.
"""
from __future__ import annotations

import hashlib

import pytest

from gateway.sip.digest import (
    DigestServer,
    authorization,
    best_challenge,
    digest_response,
    parse_challenge,
    parse_credentials,
)
from gateway.sip.message import parse_message
from tests.test_sip_transport import sip_request

URI = "sip:127.0.0.1:5060"
HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def H(algo: str, text: str) -> str:
    return HASH[algo](text.encode()).hexdigest()


def expected(algo, user, realm, pw, method, uri, nonce, nc, cnonce, qop="auth"):
    ha1 = H(algo, f"{user}:{realm}:{pw}")
    ha2 = H(algo, f"{method}:{uri}")
    if qop is None:
        return H(algo, f"{ha1}:{nonce}:{ha2}")
    return H(algo, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def register(auth: str | None = None, uri: str = URI, header: str = "Authorization"):
    extra = f"{header}: {auth}\r\n" if auth else ""
    return parse_message(sip_request("REGISTER", uri=uri, to=f"<sip:alice@127.0.0.1>",
                                     extra=extra))


def creds(challenge: str, user="alice", pw="pw", nc="00000001", cnonce="0a4f113b",
          uri=URI, qop="auth", response=None, opaque=True, method="REGISTER") -> str:
    c = parse_challenge(challenge)
    algo = c["algorithm"]
    resp = response or expected(algo, user, c["realm"], pw, method, uri, c["nonce"], nc, cnonce, qop)
    parts = [f'username="{user}"', f'realm="{c["realm"]}"', f'nonce="{c["nonce"]}"',
             f'uri="{uri}"', f'response="{resp}"', f"algorithm={algo}"]
    if qop:
        parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if opaque:
        parts.append(f'opaque="{c["opaque"]}"')
    return "Digest " + ", ".join(parts)


def pw(user: str):
    return "pw" if user == "alice" else None


# --- RFC 7616 §3.9.1 test vectors --------------------------------------------


def test_rfc7616_example_vectors():
    args = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
                method="GET", uri="/dir/index.html",
                nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", qop="auth",
                nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert digest_response("MD5", **args) == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest_response("SHA-256", **args) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")


# --- challenges -----------------------------------------------------------------


def test_challenges_sha256_first_with_qop_and_opaque():
    s = DigestServer("cau")
    ch = s.challenges()
    assert len(ch) == 2
    a, b = (parse_challenge(c) for c in ch)
    assert a["algorithm"] == "SHA-256" and b["algorithm"] == "MD5"   # RFC 8760 §2.4
    for c in (a, b):
        assert c["realm"] == "cau" and c["qop"] == "auth" and c["opaque"] and c["nonce"]
        assert "stale" not in c
    assert 'qop="auth"' in ch[0] and "algorithm=SHA-256" in ch[0]
    assert all(parse_challenge(c)["stale"] == "true" for c in s.challenges(stale=True))
    assert s.challenges()[0] != ch[0]  # every challenge has its own nonce


# --- server: round trips ----------------------------------------------------------


@pytest.mark.parametrize("index,algo", [(0, "SHA-256"), (1, "MD5")])
def test_round_trip_both_algorithms(index, algo):
    s = DigestServer("cau")
    ch = s.challenges()[index]
    assert parse_challenge(ch)["algorithm"] == algo
    r = s.verify(register(creds(ch)), pw)
    assert r.ok and r.username == "alice" and r.algorithm == algo and not r.stale, r


def test_client_authorization_is_what_rfc7616_says():
    ch = ('Digest realm="far end", nonce="abc,def", algorithm=SHA-256, '
          'qop="auth,auth-int", opaque="xyz"')
    value = authorization(ch, "INVITE", "sip:8000@192.0.2.1", "cau", "secret",
                          nc=3, cnonce="c0ffee")
    p = parse_credentials(value)
    assert p["qop"] == "auth" and p["nc"] == "00000003" and p["cnonce"] == "c0ffee"
    assert p["opaque"] == "xyz" and p["algorithm"] == "SHA-256" and p["nonce"] == "abc,def"
    assert p["response"] == expected("SHA-256", "cau", "far end", "secret", "INVITE",
                                     "sip:8000@192.0.2.1", "abc,def", "00000003", "c0ffee")
    # qop and nc are tokens, never quoted (some servers insist)
    assert "qop=auth," in value and "nc=00000003" in value
    # a challenge without algorithm is MD5; without qop the RFC 2069 form
    p = parse_credentials(authorization('Digest realm="r", nonce="n"', "REGISTER",
                                        URI, "u", "p"))
    assert p["algorithm"] == "MD5" and "qop" not in p and "cnonce" not in p
    assert p["response"] == expected("MD5", "u", "r", "p", "REGISTER", URI, "n", None, None, None)


@pytest.mark.parametrize("algo", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess", "SHA-512-256"])
def test_client_against_server(algo):
    s = DigestServer("cau", algorithms=(algo,))
    ch = s.challenges()[0]
    for nc in (1, 2, 7):
        r = s.verify(register(authorization(ch, "REGISTER", URI, "alice", "pw", nc=nc)), pw)
        assert r.ok, r


def test_best_challenge_takes_first_supported():
    chs = ['Basic realm="x"', 'Digest realm="x", nonce="1", algorithm=SHA3-999',
           'Digest realm="x", nonce="2", algorithm=MD5']
    assert best_challenge(chs) == chs[2]
    assert best_challenge(['Basic realm="x"']) is None


def test_legacy_no_qop_accepted():
    s = DigestServer("cau")
    ch = s.challenges()[1]
    assert s.verify(register(creds(ch, qop=None)), pw).ok


def test_sip_uri_compared_as_uri():
    s = DigestServer("cau")
    ch = s.challenges()[0]
    # same URI, other spelling: host case
    req = register(creds(ch, uri="sip:LOCALHOST:5060"), uri="sip:localhost:5060")
    assert s.verify(req, pw).ok


# --- server: refusals --------------------------------------------------------------


def test_wrong_password():
    s = DigestServer("cau")
    r = s.verify(register(creds(s.challenges()[0], pw="nope")), pw)
    assert not r.ok and not r.stale and r.problem == "wrong_password"


def test_unknown_user_and_missing_and_other_realm():
    s = DigestServer("cau")
    ch = s.challenges()[0]
    r = s.verify(register(creds(ch, user="mallory")), pw)
    assert (r.ok, r.problem) == (False, "unknown_user")
    r = s.verify(register(None), pw)
    assert (r.ok, r.problem) == (False, "missing")
    other = creds(ch).replace('realm="cau"', 'realm="elsewhere"')
    assert s.verify(register(other), pw).problem == "missing"


def test_stale_nonce_after_lifetime():
    clk = Clock()
    s = DigestServer("cau", nonce_lifetime=300, clock=clk)
    ch = s.challenges()[0]
    clk.t += 301
    r = s.verify(register(creds(ch)), pw)
    assert not r.ok and r.stale and r.problem == "stale" and "expired" in r.reason
    # a wrong password is never "stale" (stale tells the client its password is right)
    r = s.verify(register(creds(ch, pw="nope", nc="00000002")), pw)
    assert not r.stale and r.problem == "wrong_password"
    # the fresh nonce works
    assert s.verify(register(creds(s.challenges(stale=True)[0])), pw).ok


def test_nonce_of_another_server_is_stale():
    a, b = DigestServer("cau"), DigestServer("cau")
    r = b.verify(register(creds(a.challenges()[0])), pw)
    assert not r.ok and r.stale


def test_tampered_nonce_is_not_ours():
    s = DigestServer("cau")
    c = parse_challenge(s.challenges()[0])
    nonce = c["nonce"]
    forged = ("B" if nonce[0] != "B" else "C") + nonce[1:]
    ch = f'Digest realm="cau", nonce="{forged}", opaque="{c["opaque"]}", algorithm=SHA-256, qop="auth"'
    r = s.verify(register(creds(ch)), pw)
    assert not r.ok and r.stale and "not issued" in r.reason


def test_replayed_nonce_count_rejected():
    s = DigestServer("cau")
    ch = s.challenges()[0]
    first = register(creds(ch, nc="00000001"))
    assert s.verify(first, pw).ok
    again = s.verify(register(creds(ch, nc="00000001")), pw)
    assert not again.ok and "replay" in again.reason
    assert s.verify(register(creds(ch, nc="00000002", cnonce="other")), pw).ok
    assert not s.verify(register(creds(ch, nc="00000002", cnonce="third")), pw).ok
    assert not s.verify(register(creds(ch, nc="00000001", cnonce="fourth")), pw).ok
    assert s.verify(register(creds(ch, nc="0000000a")), pw).ok


def test_evicted_nonce_cannot_be_replayed():
    clk = Clock()
    s = DigestServer("cau", clock=clk, max_nonces=2)
    chs = []
    for _ in range(3):
        chs.append(s.challenges()[0])
        clk.t += 1
    for ch in chs:
        assert s.verify(register(creds(ch)), pw).ok
    # the first nonce fell out of the cache: its nc history is gone, so it is stale now
    r = s.verify(register(creds(chs[0], nc="00000001")), pw)
    assert not r.ok and r.stale
    r = s.verify(register(creds(chs[0], nc="00000005")), pw)
    assert not r.ok and r.stale


def test_uri_must_be_the_request_uri():
    s = DigestServer("cau")
    r = s.verify(register(creds(s.challenges()[0], uri="sip:other.example")), pw)
    assert not r.ok and r.problem == "uri"


def test_algorithm_not_offered():
    s = DigestServer("cau", algorithms=("SHA-256",))
    md5 = 'Digest realm="cau", nonce="x", algorithm=MD5, qop="auth", opaque="o"'
    r = s.verify(register(creds(md5)), pw)
    assert not r.ok and r.problem == "algorithm"


@pytest.mark.parametrize("value", [
    'Digest username="alice", realm="cau", nonce="n", uri="sip:x"',          # no response
    'Digest username="alice", realm="cau", nonce="n", uri="sip:x", response="1", qop=auth',  # no nc
    'Digest username="alice", realm="cau", realm="cau"',                    # twice
    'Digest username="alice, realm="cau"',                                  # unterminated
])
def test_malformed_credentials(value):
    s = DigestServer("cau")
    r = s.verify(register(value), pw)
    assert not r.ok and r.problem == "malformed" and r.reason


def test_proxy_authorization_header():
    s = DigestServer("cau")
    req = register(creds(s.challenges()[0]), header="Proxy-Authorization")
    assert s.verify(req, pw).problem == "missing"
    assert s.verify(req, pw, header="Proxy-Authorization").ok


# --- parsing ------------------------------------------------------------------------


def test_parse_quoted_strings_and_whitespace():
    p = parse_challenge('Digest  realm = "a, \\"b\\"" ,nonce="x=y", qop="auth,auth-int",'
                        ' algorithm=SHA-256,stale=TRUE')
    assert p == {"realm": 'a, "b"', "nonce": "x=y", "qop": "auth,auth-int",
                 "algorithm": "SHA-256", "stale": "TRUE"}


@pytest.mark.parametrize("bad", ['Basic realm="x"', "Digest realm", 'Digest realm="x" nonce="y"',
                                 "", 'Digest a="1", a="2"', 'Digest realm="x'])
def test_parse_refuses(bad):
    with pytest.raises(ValueError):
        parse_credentials(bad)
