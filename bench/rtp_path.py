"""Micro-benchmark: the per-packet RTP receive path (datagramReceived → jitter buffer), JitterBuffer.get and send().

Usage (from the repository root): .venv/bin/python bench/rtp_path.py   — prints figures, asserts nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import timeit, struct
import tests.conftest  # installs reactor
from gateway.media.rtp import RtpSession
from gateway.media.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

s = RtpSession(None, 0)
s.set_remote("127.0.0.1", 4000)
addr = ("127.0.0.1", 4000)
N = 200000
pkts = [struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, 7) + b"x" * 160 for k in range(N)]
it = iter(pkts)
t = timeit.timeit(lambda: s.datagramReceived(next(it), addr), number=N)
print(f"datagramReceived only (no callback): {t / N * 1e6:.2f} us/packet")

s2 = RtpSession(None, 0)
s2.set_remote("127.0.0.1", 4000)
jb = JitterBuffer(8000, 160)
put = jb.put
s2.on_packet = lambda pt, seq, ts, m, payload, ssrc, arrival: put(seq, ts, payload, arrival, m)
it = iter(pkts)
t = timeit.timeit(lambda: s2.datagramReceived(next(it), addr), number=N)
print(f"datagramReceived + JitterBuffer.put (whole receive path): {t / N * 1e6:.2f} us/packet  (buffer overflows={jb.stats.overflows})")

jb = JitterBuffer(8000, 160)
t = timeit.timeit(lambda: jb.put(1, 160, b"x", 1.0, False), number=N)
# put alone, in-order stream
jb = JitterBuffer(8000, 160)
seqs = iter(range(N))
def p():
    k = next(seqs)
    jb.put(k & 0xFFFF, k * 160 & 0xFFFFFFFF, b"x" * 160, 100 + k * 0.02, False)
t = timeit.timeit(p, number=N)
print(f"JitterBuffer.put alone: {t / N * 1e6:.2f} us")

# get in steady state: put one, get one
jb = JitterBuffer(8000, 160)
for k in range(3):
    jb.put(k, k * 160, b"x", 100 + k * 0.02)
state = [3]
def pg():
    k = state[0]; state[0] = k + 1
    jb.put(k & 0xFFFF, k * 160 & 0xFFFFFFFF, b"x", 100 + k * 0.02)
t_pg = timeit.timeit(pg, number=N)
state = [3]
jb = JitterBuffer(8000, 160)
for k in range(3):
    jb.put(k, k * 160, b"x", 100 + k * 0.02)
def pg2():
    k = state[0]; state[0] = k + 1
    jb.put(k & 0xFFFF, k * 160 & 0xFFFFFFFF, b"x", 100 + k * 0.02)
    jb.get(100.005 + k * 0.02)
t_both = timeit.timeit(pg2, number=N)
print(f"JitterBuffer.get (steady, playing): {(t_both - t_pg) / N * 1e6:.2f} us  kinds played={jb.stats.played}")

it = iter(pkts)
t = timeit.timeit(lambda: RtpPacket.parse(next(it)), number=N)
print(f"aiortc RtpPacket.parse for comparison: {t / N * 1e6:.2f} us")

b = RtpSession(None, 0)
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sock.bind(("127.0.0.1", 0))
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0)); rx.setblocking(False)
b._sock = sock; b.remote = rx.getsockname()
pl = b"x" * 160
n = 20000
def snd():
    b.send(pl, 0, 160)
    try: rx.recv(2048)
    except BlockingIOError: pass
t = timeit.timeit(snd, number=n)
t2 = timeit.timeit(lambda: (sock.sendto(pl, b.remote), rx.recv(2048)), number=n)
print(f"send(): {(t - t2) / n * 1e6:.2f} us over a bare sendto ({t2 / n * 1e6:.2f} us sendto+recv)")
