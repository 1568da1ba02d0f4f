"""Micro-benchmark: AudioMixer.tick() for 10/50/200 members, 3 speaking, with cheap counting encoders (mixing logic only).

Usage (from the repository root): .venv/bin/python bench/mixer.py   — prints figures, asserts nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sys, timeit
import numpy as np
from gateway.media.mixer import AudioMixer
F=320
class Enc:
    samples_per_packet_rtp=320; n=0
    def encode(self, pcm): Enc.n+=1; return b'x'
class Sink:
    __slots__=('encoder_key',)
    def __init__(s,k): s.encoder_key=k
    def make_encoder(s): return Enc()
    def deliver(s,p,step): pass
rng=np.random.default_rng(1)
t=np.arange(F)/16000
class Src:   # a fresh array every pull, like a decoder
    def __init__(s, amp, hz, dtx=False):
        s.pool=[(amp*np.sin(2*np.pi*hz*(t+k*0.02)) + rng.normal(0, 20, F)).astype(np.int16) for k in range(8)]; s.k=0; s.dtx=dtx
    def pull(s):
        if s.dtx: return None
        s.k=(s.k+1)&7; return s.pool[s.k].copy()
def setup(n, nkeys, dtx):
    mx=AudioMixer()
    for i in range(n):
        mx.add(f"m{i}", Src(8000 if i<3 else 0, 300+i, dtx and i>=3), Sink(i%nkeys))
    for _ in range(20): mx.tick()
    return mx
srcs=None
for n, nkeys, dtx in [(200,1,False),(200,3,False),(200,1,True),(50,1,False),(10,1,False)]:
    mx=setup(n,nkeys,dtx)
    Enc.n=0; N=1000
    best=min(timeit.repeat(mx.tick, number=N, repeat=5))/N*1e6
    enc=Enc.n/(5*N)
    # baseline: just calling every pull() and deliver() once (what any design must pay)
    pulls=[m.source.pull for m in mx._order]; dels=[m.sink.deliver for m in mx._order]
    def base():
        for p in pulls: p()
        for d in dels: d(b'x', 320)
    b=min(timeit.repeat(base, number=N, repeat=5))/N*1e6
    print(f"members={n:3d} keys={nkeys} non-speakers-DTX={dtx!s:5}: tick {best:6.1f} us (min of 5x{N}), p50 {mx.stats.tick_time_us_p50:6.1f} p99 {mx.stats.tick_time_us_p99:7.1f}; "
          f"pull+deliver calls alone {b:5.1f} us; encodes/tick {enc:.0f}; speakers {len(mx.speakers)}")
