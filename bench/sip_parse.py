"""Micro-benchmark: SIP parse/serialize of a typical INVITE, header access, URIs, make_response, TCP framing.

Usage (from the repository root): .venv/bin/python bench/sip_parse.py   — prints figures, asserts nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import timeit
from pathlib import Path
from tests.test_sip_message import INVITE
from gateway.sip.message import *
m = parse_message(INVITE)
def T(label, f, n=2000):
    t=min(timeit.repeat(f, number=n, repeat=15))/n
    print(f"{label:45}: {t*1e6:6.1f} us")
T("parse_message(typical INVITE, 12 hdrs, SDP)", lambda: parse_message(INVITE))
T("serialize()", lambda: m.serialize())
T("top_via+from_+to+cseq+call_id", lambda: (m.top_via, m.from_, m.to, m.cseq, m.call_id))
T("make_response(180, to_tag)", lambda: make_response(m, 180, to_tag="abc"))
T("SipUri.parse (plain)", lambda: SipUri.parse("sip:alice@atlanta.example.com;transport=udp"), 20000)
T("SipUri.parse (escaped)", lambda: SipUri.parse("sip:I%20am@[2001:db8::1]:5060;lr?x=%20"), 20000)
T("Via.parse", lambda: Via.parse("SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport"), 20000)
T("Address.parse", lambda: Address.parse('"Alice" <sip:alice@atlanta.example.com>;tag=1928301774'), 20000)
f=StreamFramer(); s=INVITE*10
T("StreamFramer.feed(10 INVITEs)/10", lambda: f.feed(s), 200)
D=Path(__file__).resolve().parents[2] / 'shared' / 'rfc4475'; big=(D/'longreq.dat').read_bytes()
T("parse_message(longreq, 34 Vias)", lambda: parse_message(big), 500)
print("reference sum(range(100)):", round(min(timeit.repeat("sum(range(100))", number=20000, repeat=9))/20000*1e6,2), "us")
