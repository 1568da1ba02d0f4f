"""RFC 4475 torture messages against the SIP parser (gateway.sip.message).

Every message in ``interop_tests/data/rfc4475`` (shipped with the suite) is
classified here by what RFC 4475 says an element should do with it:

* valid messages (§3.1.1, and the transaction/application-layer ones of
  §3.2-3.4 that are syntactically fine) parse, and survive a
  serialize → parse round trip with the same start line, Call-ID, CSeq,
  From tag and body;
* invalid messages raise SipParseError whose reason names the problem and
  whose status is the answer the RFC asks for (400, or 505 for badvers);
  for requests the partial message still lets us answer with the
  transaction's Via/From/To/Call-ID/CSeq copied.

Where RFC 4475 lets an element be liberal (lwsstart, trws, escruri,
baddate, regbadct, badaspec, baddn) we take the strict reading it also
allows: reject with 400.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.message import (
    AbsoluteUri,
    Request,
    Response,
    SipParseError,
    SipUri,
    make_response,
    parse_message,
)

TORTURE_DIR = Path(__file__).resolve().parents[1] / "interop_tests" / "data" / "rfc4475"

# name -> RFC 4475 section
VALID = {
    "wsinv": "3.1.1.1", "intmeth": "3.1.1.2", "esc01": "3.1.1.3",
    "escnull": "3.1.1.4", "esc02": "3.1.1.5", "lwsdisp": "3.1.1.6",
    "longreq": "3.1.1.7", "dblreq": "3.1.1.8", "semiuri": "3.1.1.9",
    "transports": "3.1.1.10", "mpart01": "3.1.1.11", "unreason": "3.1.1.12",
    "noreason": "3.1.1.13", "badbranch": "3.2.1", "unkscm": "3.3.2",
    "novelsc": "3.3.3", "unksm2": "3.3.4", "bext01": "3.3.5",
    "invut": "3.3.6", "regaut01": "3.3.7", "bcast": "3.3.10",
    "zeromf": "3.3.11", "cparam01": "3.3.12", "cparam02": "3.3.13",
    "regescrt": "3.3.14", "sdp01": "3.3.15", "inv2543": "3.4.1",
}

# name -> (section, words the reason must contain, status, is a response)
INVALID = {
    "badinv01": ("3.1.2.1", ["Via", "empty"], 400, False),
    "clerr": ("3.1.2.2", ["Content-Length larger than the body"], 400, False),
    "ncl": ("3.1.2.3", ["Content-Length", "-999"], 400, False),
    "scalar02": ("3.1.2.4", ["CSeq", "out of range"], 400, False),
    "scalarlg": ("3.1.2.5", ["CSeq", "out of range"], 400, True),
    "quotbal": ("3.1.2.6", ["To", "unterminated quoted string"], 400, False),
    "ltgtruri": ("3.1.2.7", ["Request-URI"], 400, False),
    "lwsruri": ("3.1.2.8", ["Request-URI", "whitespace"], 400, False),
    "lwsstart": ("3.1.2.9", ["Request-Line", "single SP"], 400, False),
    "trws": ("3.1.2.10", ["Request-Line", "whitespace at the end"], 400, False),
    "escruri": ("3.1.2.11", ["Request-URI", "headers"], 400, False),
    "baddate": ("3.1.2.12", ["Date", "GMT"], 400, False),
    "regbadct": ("3.1.2.13", ["Contact", "<>"], 400, False),
    "badaspec": ("3.1.2.14", ["To", "whitespace"], 400, False),
    "baddn": ("3.1.2.15", ["From", "display name"], 400, False),
    "badvers": ("3.1.2.16", ["version", "SIP/7.0"], 505, False),
    "mismatch01": ("3.1.2.17", ["CSeq method", "INVITE"], 400, False),
    "mismatch02": ("3.1.2.18", ["CSeq method", "INVITE"], 400, False),
    "bigcode": ("3.1.2.19", ["status code", "4294967301"], 400, True),
    "insuf": ("3.3.1", ["Missing", "From", "To", "Call-ID"], 400, False),
    "multi01": ("3.3.8", ["Multiple"], 400, False),
    "mcl01": ("3.3.9", ["Multiple Content-Length"], 400, False),
}


def _dir() -> Path:
    if not TORTURE_DIR.is_dir():
        pytest.fail(
            f"RFC 4475 messages not found at {TORTURE_DIR} (interop_tests/data/rfc4475/*.dat)"
        )
    return TORTURE_DIR


def load(name: str) -> bytes:
    return (_dir() / f"{name}.dat").read_bytes()


def test_every_torture_message_is_classified() -> None:
    on_disk = {p.stem for p in _dir().glob("*.dat")}
    assert len(on_disk) == 49, sorted(on_disk)
    assert on_disk == set(VALID) | set(INVALID)
    assert not set(VALID) & set(INVALID)


def _reference_body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_parses_and_round_trips(name: str) -> None:
    raw = load(name)
    msg = parse_message(raw)
    again = parse_message(msg.serialize())
    assert type(again) is type(msg)
    if isinstance(msg, Request):
        assert again.method == msg.method
        assert again.uri == msg.uri
        assert str(again.uri) == str(msg.uri)
        # the Request-URI reads back as written (modulo escaping/case)
        assert msg.serialize().split(b"\r\n", 1)[0] == (
            f"{msg.method} {msg.uri} SIP/2.0".encode("utf-8", "surrogateescape")
        )
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)
    assert again.call_id == msg.call_id
    assert again.cseq == msg.cseq
    assert again.from_ is not None and msg.from_ is not None
    assert again.from_.tag == msg.from_.tag
    assert again.to == msg.to
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    assert again.body == msg.body
    # Content-Length always equals the body we send
    assert again.headers.get("Content-Length") == str(len(msg.body))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_is_rejected_with_a_reason(name: str) -> None:
    section, words, status, is_response = INVALID[name]
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    err = info.value
    for word in words:
        assert word in err.reason, f"RFC 4475 {section}: {err.reason!r} lacks {word!r}"
    assert err.status == status
    assert err.is_response == is_response
    assert "\r" not in err.reason and "\n" not in err.reason
    if is_response:
        # responses are never answered: the element drops them
        assert err.partial is None
        return
    # a request: the answer can still be formed from what was readable
    assert isinstance(err.partial, Request)
    # (the answer copies the offending header fields verbatim, as it must)
    answer = make_response(err.partial, err.status, err.reason)
    wire = answer.serialize()
    assert wire.startswith(f"SIP/2.0 {status} {err.reason}\r\n".encode())
    assert answer.headers.get_lines("Via") == err.partial.headers.get_lines("Via")
    assert answer.headers.get_lines("Via")  # every torture request has one
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert answer.headers.get_lines(name) == err.partial.headers.get_lines(name)[:1]


# --- what the RFC says about particular valid messages ---------------------


def test_wsinv_short_tortuous_invite() -> None:
    m = parse_message(load("wsinv"))
    assert isinstance(m, Request) and m.method == "INVITE"
    assert isinstance(m.uri, SipUri) and m.uri.params == {"unknownparam": None}
    assert m.to is not None and m.to.tag == "1918181833n"
    assert m.to.uri == SipUri.parse("sip:vivekg@chair-dnrc.example.com")
    assert m.from_ is not None and m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("NewFangledHeader") == (
        "newfangled value continued newfangled value"
    )
    assert m.headers.get("Subject") == ""
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    (route,) = m.routes
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert m.content_type == "application/sdp" and len(m.body) == 150


def test_intmeth_wide_range_of_valid_characters() -> None:
    m = parse_message(load("intmeth"))
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq.method == m.method
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes_are_decoded_and_reencoded() -> None:
    m = parse_message(load("esc01"))
    assert m.uri.user == "sips:user@example.com"
    assert str(m.uri) == "sip:sips%3Auser%40example.com@example.net"
    assert m.to.uri.user == "user"  # sip:%75se%72@ == sip:user@
    assert m.from_.uri.user == "I have spaces"
    (contact,) = m.contacts
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}

    n = parse_message(load("escnull"))
    assert n.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in n.contacts] == ["\x00", "\x00\x00"]
    assert str(n.contacts[1].uri) == "sip:%00%00@host5.example.com"

    e = parse_message(load("esc02"))
    assert e.method == "RE%47IST%45R"
    assert e.to.display_name == "%Z%45"
    assert e.top_via.branch == "z9hG4bK209%fzsnel234"
    # 'C%6Fntact' is not Contact: it is an unknown header kept as is
    assert len(e.contacts) == 2
    assert e.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_other_valid_messages_mean_what_the_rfc_says() -> None:
    assert parse_message(load("lwsdisp")).from_.display_name == "caller"
    long = parse_message(load("longreq"))
    assert len(long.vias) == 34 and long.vias[-1].received == "192.0.2.5"
    dbl = parse_message(load("dblreq"))  # only the first message counts
    assert dbl.method == "REGISTER" and dbl.body == b""
    semi = parse_message(load("semiuri"))
    assert (semi.uri.user, semi.uri.host, semi.uri.params) == (
        "user;par=u@example.net", "example.com", {})
    assert len(semi.headers.get_all("Accept")) == 6
    assert [v.transport for v in parse_message(load("transports")).vias] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    raw = load("mpart01")
    mp = parse_message(raw)
    assert mp.content_type == "multipart/mixed" and mp.body == _reference_body(raw)
    assert mp.top_via.params["rport"] is None
    un = parse_message(load("unreason"))
    assert un.status == 200 and un.reason.startswith("= 2**3 * 5**2 но")
    assert parse_message(load("noreason")).reason == ""
    assert parse_message(load("badbranch")).top_via.branch == "z9hG4bK"
    assert parse_message(load("unkscm")).uri == AbsoluteUri(
        "nobodyknowsthisscheme", "totallyopaquecontent")
    assert parse_message(load("novelsc")).uri == AbsoluteUri(
        "soap.beep", "//192.0.2.103:3002")
    u2 = parse_message(load("unksm2"))
    assert u2.to.uri == AbsoluteUri("isbn", "2983792873")
    assert u2.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert u2.contacts[0].uri == AbsoluteUri("name", "John_Smith")
    assert parse_message(load("bext01")).headers.get_all("Require") == [
        "nothingSupportsThis", "nothingSupportsThisEither"]
    assert parse_message(load("regaut01")).headers.get_all("Authorization") == [
        "NoOneKnowsThisScheme opaque-data=here"]
    assert parse_message(load("bcast")).vias[1].host == "255.255.255.255"
    assert parse_message(load("zeromf")).max_forwards == 0
    c1 = parse_message(load("cparam01")).contacts[0]  # addr-spec: param is the header's
    assert c1.uri.params == {} and c1.params == {"unknownparam": None}
    c2 = parse_message(load("cparam02")).contacts[0]  # in <>: param is the URI's
    assert c2.uri.params == {"unknownparam": None} and c2.params == {}
    rr = parse_message(load("regescrt")).contacts[0]
    assert rr.uri.headers == {"Route": "<sip:sip.example.com>"}
    old = parse_message(load("inv2543"))  # RFC 2543: no Max-Forwards, no branch
    assert old.max_forwards is None and old.top_via.branch is None
    assert old.body == _reference_body(load("inv2543"))
