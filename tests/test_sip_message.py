"""SIP message model, parser, serializer and TCP framing (gateway.sip.message)."""
from __future__ import annotations

import random

import pytest

from gateway.sip.headers import Headers
from gateway.sip.message import (
    KEEPALIVE_PING,
    AbsoluteUri,
    Address,
    CSeq,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    Via,
    make_response,
    parse_message,
    parse_uri,
)

BODY = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\nc=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


def msg(*header_lines: str, start: str = "OPTIONS sip:bob@example.com SIP/2.0",
        body: bytes = b"", content_length: bool = True) -> bytes:
    base = [
        "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKabc",
        "To: <sip:bob@example.com>",
        "From: <sip:alice@example.com>;tag=a1",
        "Call-ID: c1@host",
        "CSeq: 1 " + start.split(" ", 1)[0],
        "Max-Forwards: 70",
    ]
    names = {line.split(":", 1)[0].strip().lower() for line in header_lines}
    lines = [start] + [b for b in base if b.split(":", 1)[0].lower() not in names]
    lines += list(header_lines)
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- parsing a typical request ---------------------------------------------


def test_typical_invite_parses_into_typed_values() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == SipUri("sip", "bob", None, "biloxi.example.com")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.from_.display_name == "Alice" and m.from_.tag == "1928301774"
    assert m.to.display_name == "Bob" and m.to.tag is None
    assert m.max_forwards == 70
    assert m.content_type == "application/sdp"
    assert m.body == BODY
    top = m.top_via
    assert (top.transport, top.host, top.port, top.branch) == (
        "UDP", "pc33.atlanta.example.com", 5060, "z9hG4bK776asdhds")
    assert top.params["rport"] is None and top.is_rfc3261_branch
    assert [v.host for v in m.vias] == ["pc33.atlanta.example.com", "proxy.example.com"]
    assert m.contacts[0].uri.transport == "udp"


def test_canonical_message_serializes_byte_for_byte() -> None:
    assert parse_message(INVITE).serialize() == INVITE


def test_compact_forms_become_long_names() -> None:
    data = (
        "OPTIONS sip:bob@example.com SIP/2.0\r\n"
        "v: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        "t: <sip:bob@example.com>\r\nf: <sip:a@example.com>;tag=1\r\n"
        "i: cid\r\nCSeq: 1 OPTIONS\r\nm: <sip:a@h.example.com>\r\n"
        "c: text/plain\r\ne: gzip\r\nk: timer\r\ns: hi\r\no: refer\r\n"
        "u: dialog\r\nr: <sip:c@example.com>\r\nb: <sip:d@example.com>\r\n"
        "x: 1800\r\ny: sig\r\nl: 2\r\n\r\nhi"
    ).encode()
    m = parse_message(data)
    assert [name for name, _ in m.headers.items()] == [
        "Via", "To", "From", "Call-ID", "CSeq", "Contact", "Content-Type",
        "Content-Encoding", "Supported", "Subject", "Event", "Allow-Events",
        "Refer-To", "Referred-By", "Session-Expires", "Identity", "Content-Length"]
    assert m.body == b"hi" and m.call_id == "cid"
    assert b"\r\nCall-ID: cid\r\n" in m.serialize()


def test_header_names_are_case_insensitive_and_spelled_canonically() -> None:
    m = parse_message(msg("cALL-iD : x1@y", "max-FORWARDS:\t9", "X-Custom-Thing: kept"))
    assert m.call_id == "x1@y" and m.max_forwards == 9
    for spelling in ("Call-ID", "call-id", "CALL-ID", "i", "I"):
        assert m.headers.get(spelling) == "x1@y"
        assert spelling in m.headers
    names = [n for n, _ in m.headers.items()]
    assert "Call-ID" in names and "Max-Forwards" in names
    assert "X-Custom-Thing" in names  # unknown: verbatim
    assert m.headers.get("x-custom-thing") == "kept"


def test_folded_header_lines_are_unfolded() -> None:
    m = parse_message(msg("Subject: first part\r\n   second part\r\n\tthird",
                          "Contact:\r\n <sip:a@h.example.com>\r\n ;expires=60"))
    assert m.headers.get("Subject") == "first part second part third"
    assert m.contacts[0].params == {"expires": "60"}


def test_leading_crlfs_are_ignored_and_version_is_case_insensitive() -> None:
    m = parse_message(b"\r\n\r\n" + msg(start="OPTIONS sip:bob@example.com sip/2.0"))
    assert m.method == "OPTIONS"


# --- multi-valued headers ----------------------------------------------------


def test_get_all_splits_lists_but_respects_quotes_and_brackets() -> None:
    m = parse_message(msg(
        'Contact: "Doe, John" <sip:j@h.example.com;x=1>, <sip:k@h.example.com>;q=0.5',
        "Contact: sip:l@h.example.com",
        "Allow: INVITE,ACK , BYE",
        'WWW-Authenticate: Digest realm="a, b", nonce="n", qop="auth,auth-int"',
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "User-Agent: Phone (v1, build 2)",
    ))
    contacts = m.headers.get_all("Contact")
    assert contacts == ['"Doe, John" <sip:j@h.example.com;x=1>',
                        "<sip:k@h.example.com>;q=0.5", "sip:l@h.example.com"]
    assert [c.display_name for c in m.contacts] == ["Doe, John", None, None]
    assert m.headers.get("Contact") == contacts[0]
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert m.headers.get_all("WWW-Authenticate") == [
        'Digest realm="a, b", nonce="n", qop="auth,auth-int"']
    assert m.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.headers.get_all("User-Agent") == ["Phone (v1, build 2)"]


def test_vias_in_one_line_and_many_lines_keep_their_order() -> None:
    m = parse_message(msg(
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070"
        ";branch=z9hG4bK2",
        "Via: SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK3;received=2001:db8::10",
    ))
    assert [(v.transport, v.host, v.port) for v in m.vias] == [
        ("UDP", "a.example.com", None), ("TCP", "b.example.com", 5070),
        ("TLS", "2001:db8::9", 5061)]
    assert m.vias[2].received == "2001:db8::10"
    assert str(m.vias[2]) == (
        "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK3;received=2001:db8::10")


def test_headers_editing() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("To", "<sip:b@x>")])
    h.add("v", "SIP/2.0/UDP top;branch=z9hG4bK0", first=True)
    assert h.get_all("Via") == ["SIP/2.0/UDP top;branch=z9hG4bK0",
                                "SIP/2.0/UDP a;branch=z9hG4bK1"]
    h.add("X-Foo", "1")
    h.add("x-foo", "2")
    assert h.get_all("X-FOO") == ["1", "2"]
    h.set("x-foo", "3")
    assert h.get_all("X-Foo") == ["3"]
    c = h.copy()
    h.remove("Via")
    assert "Via" not in h and "via" in c
    assert h.get("Via") is None and h.get("Via", "none") == "none"
    assert list(h.items()) == [("To", "<sip:b@x>"), ("x-foo", "3")]  # as set
    with pytest.raises(ValueError):
        h.set("Subject", "evil\r\nInjected: 1")
    with pytest.raises(SipParseError):
        h.add("Bad Name", "x")
    h2 = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b")])
    assert h2.remove_first("Via") == "SIP/2.0/UDP a"
    assert h2.get_all("Via") == ["SIP/2.0/UDP b"]


# --- serialization -----------------------------------------------------------


def test_serialize_always_sets_content_length_to_the_body() -> None:
    req = Request("MESSAGE", SipUri.parse("sip:bob@example.com"))
    req.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK9")
    req.headers.add("Content-Length", "999")
    req.headers.add("l", "5")
    req.body = "héllo".encode()
    wire = req.serialize()
    assert wire.endswith(b"Content-Length: 6\r\n\r\nh\xc3\xa9llo")
    assert wire.count(b"Content-Length") == 1
    assert wire.startswith(b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: ")
    bare = Response(200, "OK")
    assert bare.serialize() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_round_trip_keeps_meaning() -> None:
    m = parse_message(INVITE)
    m.headers.set("To", str(Address.parse("Bob <sip:bob@biloxi.example.com>;tag=xyz")))
    again = parse_message(m.serialize())
    assert again.to.tag == "xyz" and again.to.display_name == "Bob"
    assert again.body == BODY and again.cseq == m.cseq


# --- make_response -------------------------------------------------------------


def test_make_response_copies_the_transaction_headers() -> None:
    req = parse_message(INVITE)
    resp = make_response(req, 180, to_tag="t0")
    assert isinstance(resp, Response) and resp.reason == "Ringing"
    assert resp.headers.get_lines("Via") == req.headers.get_lines("Via")
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.to.tag == "t0" and resp.to.uri == req.to.uri
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.headers.get("Contact") is None and resp.body == b""
    wire = parse_message(resp.serialize())
    assert isinstance(wire, Response) and wire.status == 180
    assert [v.branch for v in wire.vias] == [v.branch for v in req.vias]


def test_make_response_details() -> None:
    req = parse_message(INVITE)
    assert make_response(req, 100).headers.get("Timestamp") == "54"
    assert make_response(req, 200).headers.get("Timestamp") is None
    assert make_response(req, 486).reason == "Busy Here"
    assert make_response(req, 488).reason == "Not Acceptable Here"
    assert make_response(req, 499).reason == "Client Error"
    assert make_response(req, 403, "No Way").reason == "No Way"
    tagged = make_response(req, 200, to_tag="one")
    req.headers.set("To", tagged.headers.get("To"))
    assert make_response(req, 200, to_tag="two").to.tag == "one"  # never re-tagged
    addr_spec = parse_message(msg("To: sip:bob@example.com"))
    to = make_response(addr_spec, 200, to_tag="z").to
    assert to.tag == "z" and to.uri.params == {}


def test_bad_request_can_still_be_answered() -> None:
    data = msg("Call-ID: has space")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert err.status == 400 and "Call-ID" in err.reason
    resp = make_response(err.partial, 400, err.reason)
    assert resp.serialize().startswith(b"SIP/2.0 400 Bad Call-ID")
    assert resp.headers.get("Via") == "SIP/2.0/UDP host.example.com;branch=z9hG4bKabc"
    assert resp.headers.get("CSeq") == "1 OPTIONS"


# --- errors a 400 can carry ----------------------------------------------------


@pytest.mark.parametrize("lines, start, words", [
    (["Max-Forwards: 256"], None, ["Max-Forwards", "256"]),
    (["Max-Forwards: ten"], None, ["Max-Forwards"]),
    (["CSeq: one OPTIONS"], None, ["Bad CSeq: non-numeric sequence number"]),
    (["CSeq: 4294967296 OPTIONS"], None, ["CSeq", "out of range"]),
    (["CSeq: 1"], None, ["CSeq"]),
    (["Call-ID: a@b", "Call-ID: c@d"], None, ["Multiple Call-ID"]),
    (["From: <sip:a@b>;tag=1", "From: <sip:a@b>;tag=2"], None, ["Multiple From"]),
    (["To: <sip:bob@example.com"], None, ["To", ">"]),
    (["Via: SIP/2.0/UDP"], None, ["Via"]),
    (["Via: SIP/2.0/UDP h.example.com:99999;branch=z9hG4bK1"], None, ["Via", "port"]),
    (["Contact: <sip:a@b>;expires"], None, []),  # valid: param without value
    (["Route: <sip:p1.example.com;lr>,,<sip:p2.example.com;lr>"], None, ["Route", "empty"]),
    ([], "OPTIONS sip:bob@example.com SIP/3.0", ["version"]),
    ([], "OPTIONS sip:bob@example.com HTTP/1.1", ["Request-Line", "version"]),
    ([], "OPT<IONS sip:bob@example.com SIP/2.0", ["method"]),
    ([], "OPTIONS sip:bob@exa mple.com SIP/2.0", ["Request-URI"]),
    ([], "OPTIONS sip:bob@ SIP/2.0", ["Request-URI", "host"]),
    (["Bad Header: x"], None, ["header name"]),
    (["NoColonHere"], None, ["Malformed header line"]),
])
def test_malformed_requests_get_a_reason(lines, start, words) -> None:
    data = msg(*lines, start=start or "OPTIONS sip:bob@example.com SIP/2.0")
    if not words:
        parse_message(data)
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    for w in words:
        assert w in info.value.reason
    assert info.value.status == (505 if "3.0" in (start or "") else 400)


def test_repeated_identical_single_headers_and_missing_max_forwards_are_tolerated() -> None:
    m = parse_message(msg("Call-ID: same@h", "Call-ID: same@h"))
    assert m.call_id == "same@h"
    data = msg().replace(b"Max-Forwards: 70\r\n", b"")
    assert parse_message(data).max_forwards is None


def test_content_length_rules_for_datagrams() -> None:
    base = msg(body=b"abc")
    assert parse_message(base + b"trailing junk").body == b"abc"  # truncated
    short = base.replace(b"Content-Length: 3", b"Content-Length: 10")
    with pytest.raises(SipParseError, match="Content-Length larger than the body"):
        parse_message(short)
    no_cl = msg(body=b"to the end", content_length=False)
    assert parse_message(no_cl).body == b"to the end"
    with pytest.raises(SipParseError, match="Multiple Content-Length"):
        parse_message(msg("Content-Length: 1", "l: 2", content_length=False))
    with pytest.raises(SipParseError, match="Empty message"):
        parse_message(b"\r\n\r\n")


def test_responses() -> None:
    data = (b"SIP/2.0 183 Session Progress\r\n"
            b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
            b"To: <sip:b@example.com>;tag=9\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            b"Call-ID: x\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n")
    r = parse_message(data)
    assert isinstance(r, Response) and (r.status, r.reason) == (183, "Session Progress")
    assert r.to.tag == "9" and r.cseq.method == "INVITE"
    assert r.serialize() == data
    with pytest.raises(SipParseError) as info:
        parse_message(data.replace(b"183", b"099"))
    assert info.value.is_response and info.value.partial is None


def test_garbage_never_crashes_the_parser() -> None:
    rng = random.Random(4475)
    alphabet = b'\r\n\t :;,<>"\\@%=/?[]\x00\xff0aZ'
    for i in range(1500):
        data = bytearray(INVITE)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.choice(alphabet)
            elif op < 0.7:
                del data[pos: pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        if i % 10 == 0:
            data = data[: rng.randrange(len(data))]
        try:
            m = parse_message(bytes(data))
        except SipParseError as e:
            assert e.reason and "\n" not in e.reason
            continue
        # whatever parsed must serialize and parse again
        parse_message(m.serialize())


# --- URIs ----------------------------------------------------------------------


def test_sip_uri_escaping_and_equivalence() -> None:
    assert SipUri.parse("sip:%61lice@atlanta.com") == SipUri.parse("sip:alice@ATLANTA.com")
    u = SipUri.parse("sip:I%20have%20spaces:p%40ss@example.net;Maddr=239.1.1.1;lr"
                     "?subject=project%20x&priority=urgent")
    assert u.user == "I have spaces" and u.password == "p@ss"
    assert u.params == {"maddr": "239.1.1.1", "lr": None}
    assert u.headers == {"subject": "project x", "priority": "urgent"}
    assert str(u) == ("sip:I%20have%20spaces:p%40ss@example.net;maddr=239.1.1.1;lr"
                      "?subject=project%20x&priority=urgent")
    assert SipUri.parse(str(u)) == u
    t = SipUri.parse("sips:+1-212-555-1212:1234@gateway.com;user=phone")
    assert (t.scheme, t.user, t.password, t.params["user"]) == (
        "sips", "+1-212-555-1212", "1234", "phone")


def test_sip_uri_hosts_and_ports() -> None:
    v6 = SipUri.parse("sip:alice@[2001:DB8::1]:5070;transport=tcp")
    assert (v6.host, v6.port, v6.transport) == ("2001:db8::1", 5070, "tcp")
    assert str(v6) == "sip:alice@[2001:db8::1]:5070;transport=tcp"
    assert v6.host_port == "[2001:db8::1]:5070"
    assert SipUri.parse("sip:192.0.2.4").host == "192.0.2.4"
    assert SipUri(host="example.com", port=5060, params={"lr": None}).__str__() == (
        "sip:example.com:5060;lr")


@pytest.mark.parametrize("text", [
    "sip:", "sip:alice@", "sip:alice@host:99999", "sip:alice@host:5x",
    "sip:a@b;;x", "sip:a b@c", "sip:a@[::1", "sip:a@[zz::1]", "sip:%zz@host",
    "sip:a@b?x", "sip:a@host name", "http://example.com",
])
def test_bad_sip_uris_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_other_uri_schemes_are_kept_verbatim() -> None:
    assert parse_uri("tel:+1-201-555-0123;phone-context=x") == AbsoluteUri(
        "tel", "+1-201-555-0123;phone-context=x")
    assert str(parse_uri("h323:room1@gk.example.com")) == "h323:room1@gk.example.com"
    assert isinstance(parse_uri("SIP:bob@example.com"), SipUri)
    for bad in ("nocolon", ":x", "tel:", "1x:abc", "tel:a b", "<sip:a@b>"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


# --- Address, Via, CSeq -------------------------------------------------------


def test_address_forms() -> None:
    a = Address.parse('"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=88')
    assert a.display_name == 'Alice "A" Smith' and a.tag == "88"
    assert a.uri.params == {"transport": "tcp"}
    assert str(a) == '"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=88'
    assert Address.parse(str(a)) == a
    b = Address.parse("sip:bob@example.com;transport=tcp;tag=9")  # addr-spec
    assert b.uri.params == {} and b.params == {"transport": "tcp", "tag": "9"}
    assert str(b) == "<sip:bob@example.com>;transport=tcp;tag=9"
    c = Address.parse("The  Operator <tel:+15551234>")
    assert c.display_name == "The Operator" and c.uri == AbsoluteUri("tel", "+15551234")
    assert str(Address(None, SipUri.parse("sip:x@y"))) == "<sip:x@y>"
    assert str(Address("Ha\\ck", SipUri.parse("sip:x@y"))) == '"Ha\\\\ck" <sip:x@y>'


@pytest.mark.parametrize("text", [
    '"unterminated <sip:a@b>', "Bell, Alex <sip:a@b>", "< sip:a@b >",
    "<sip:a@b", "sip:a@b?h=1", '"x" sip:a@b', "<sip:a@b> junk", "<sip:a@b>;",
    "", "<>",
])
def test_bad_addresses_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        Address.parse(text)


def test_via_and_cseq_values() -> None:
    v = Via.parse("SIP / 2.0 / udp Host.Example.com : 5060 ; branch = z9hG4bKx ; rport")
    assert (v.transport, v.host, v.port) == ("UDP", "host.example.com", 5060)
    assert v.params == {"branch": "z9hG4bKx", "rport": None} and v.rport is None
    v.params["rport"] = "6000"
    v.params["received"] = "192.0.2.7"
    assert str(v) == ("SIP/2.0/UDP host.example.com:5060;branch=z9hG4bKx"
                      ";rport=6000;received=192.0.2.7")
    assert Via.parse(str(v)).rport == 6000 and v.sent_by == "host.example.com:5060"
    assert str(Via("TCP", "192.0.2.1", params={"branch": "z9hG4bKq"})) == (
        "SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKq")
    with pytest.raises(SipParseError, match="unsupported protocol"):
        Via.parse("SIP/3.0/UDP h")
    assert CSeq.parse(" 0009   ACK ") == CSeq(9, "ACK")
    assert str(CSeq(2**31 - 1, "BYE")) == "2147483647 BYE"


# --- TCP framing ---------------------------------------------------------------


def test_framer_handles_split_and_coalesced_chunks() -> None:
    second = msg(body=b"xyz")
    stream = INVITE + KEEPALIVE_PING + second + b"\r\n" + INVITE
    whole = StreamFramer().feed(stream)
    assert whole == [INVITE, KEEPALIVE_PING, second, INVITE]
    framer = StreamFramer()
    got: list = []
    for i in range(len(stream)):  # one octet at a time
        got += framer.feed(stream[i: i + 1])
    assert got == whole and framer.buffered == 0
    rng = random.Random(7)
    framer = StreamFramer()
    got = []
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 200)
        got += framer.feed(stream[pos: pos + n])
        pos += n
    assert got == whole
    assert [parse_message(m).method for m in got if m != KEEPALIVE_PING] == [
        "INVITE", "OPTIONS", "INVITE"]


def test_framer_waits_for_the_body() -> None:
    framer = StreamFramer()
    head, body = INVITE.split(b"\r\n\r\n", 1)
    assert framer.feed(head + b"\r\n\r\n" + body[:10]) == []
    assert framer.feed(body[10:]) == [INVITE]
    assert framer.feed(b"\r\n") == []  # lone CRLF (a pong): nothing to report
    assert framer.feed(b"\r\n\r\n") == [KEEPALIVE_PING]


def test_framer_missing_content_length_is_fatal_but_answerable() -> None:
    framer = StreamFramer()
    out = framer.feed(msg(content_length=False) + INVITE)
    assert len(out) == 1 and isinstance(out[0], SipParseError)
    assert "Content-Length" in out[0].reason and framer.broken
    assert out[0].partial is not None and out[0].partial.method == "OPTIONS"
    assert framer.feed(INVITE) == []  # no resync on a broken stream


def test_framer_rejects_bad_and_oversized_messages() -> None:
    out = StreamFramer().feed(msg("l: -5", content_length=False))
    assert isinstance(out[0], SipParseError) and "Content-Length" in out[0].reason
    framer = StreamFramer(max_message=1000)
    out = framer.feed(msg(body=b"x" * 2000))
    assert isinstance(out[0], SipParseError) and "larger than 1000" in out[0].reason
    assert framer.broken
    framer = StreamFramer(max_message=1000)
    out = framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX-Long: " + b"a" * 1200)
    assert isinstance(out[0], SipParseError) and framer.broken


def test_a_response_to_a_request_with_a_bare_cr_in_via_can_be_built():
    """Found by scripts/fuzz.py: a Via with a bare CR made building the 400 itself fail (a traceback,
    no answer). The copied values are cleaned; the 400 goes out."""
    from gateway.sip.message import SipParseError, make_response, parse_message

    data = (b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;br\ranch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:1000@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    try:
        parse_message(data)
        raise AssertionError("a bare CR was accepted")
    except SipParseError as e:
        assert e.status == 400 and e.partial is not None
        r = make_response(e.partial, e.status, e.reason)
    text = r.serialize()
    assert text.startswith(b"SIP/2.0 400") and b"\r\r" not in text and b"br anch" in text
