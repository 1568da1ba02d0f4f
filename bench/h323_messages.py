"""Micro-benchmark: pycrate load time and encode/decode of H.225.0 Setup, RAS and H.245 messages.

Usage (from the repository root): .venv/bin/python bench/h323_messages.py   — prints figures, asserts nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import time, timeit, sys
t0=time.perf_counter()
from gateway.h323 import asn1, q931, ras, tpkt
from gateway.h323.capabilities import terminal_capability_set, tcs_message, parse_capabilities
t1=time.perf_counter()
asn1.h225_module(); asn1.h245_module()
t2=time.perf_counter()
print(f"import gateway.h323.* {1e3*(t1-t0):.0f} ms; first h225_module() {1e3*(t2-t1):.0f} ms; {asn1.import_seconds()}")
from tests.test_h323_q931 import hdx_fast_start
from gateway.catalogue import default_catalogue
cat=default_catalogue()
C=bytes(16); G=bytes(range(16))
tcsb = asn1.encode_h245(tcs_message(terminal_capability_set(cat)))
fs = hdx_fast_start()
def mk_setup(): return q931.build_setup(7,C,G,[('h323-ID','Cau'),('dialedDigits','1001')],[('dialedDigits','5000')],('192.0.2.2',1720),('192.0.2.1',1720),fs,True,h245_control=[tcsb]).encode()
setup = mk_setup()
def dec_setup(): return q931.decode(setup).user_user
rrq = ras.build_rrq(2,[('192.0.2.1',1720)],[('192.0.2.1',1719)],aliases=[('h323-ID','room1')],time_to_live=300)
ka = ras.build_keepalive_rrq(3,[('192.0.2.1',1720)],[('192.0.2.1',1719)],'EP1','GK',300)
tcsv = tcs_message(terminal_capability_set(cat))
rows = [
 ("build_setup+encode (fastStart 3 OLC + TCS)", mk_setup),
 ("decode Setup incl. UUIE", dec_setup),
 ("build_rrq", lambda: ras.build_rrq(2,[('192.0.2.1',1720)],[('192.0.2.1',1719)],aliases=[('h323-ID','room1')],time_to_live=300)),
 ("parse_ras RRQ", lambda: ras.parse_ras(rrq)),
 ("parse_ras keepAlive RRQ", lambda: ras.parse_ras(ka)),
 ("build_rcf", lambda: ras.build_rcf(2,[('192.0.2.1',1720)],'EP1',time_to_live=300)),
 ("encode_h245 TCS", lambda: asn1.encode_h245(tcsv)),
 ("decode_h245 TCS", lambda: asn1.decode_h245(tcsb)),
 ("terminal_capability_set()", lambda: terminal_capability_set(cat)),
 ("q931.decode (no UUIE decode)", lambda: q931.decode(setup)),
 ("TpktFramer.feed 1 pkt", lambda: tpkt.TpktFramer().feed(tpkt.tpkt_frame(setup))),
]
for name, fn in rows:
    n=200 if 'TCS' in name or 'setup' in name.lower() else 500
    best=min(timeit.repeat(fn, number=n, repeat=3))/n
    print(f"{name:45s} {best*1e6:8.0f} µs")
print(len(setup), len(tcsb), len(rrq))
