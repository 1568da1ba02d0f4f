"""Micro-benchmark: µs per 20 ms frame for each audio codec (decode, encode, conceal), resampling and DTMF.

Usage (from the repository root): .venv/bin/python bench/audio_codecs.py   — prints figures, asserts nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import timeit, numpy as np
from gateway.catalogue import default_catalogue
from gateway.media.audio_codecs import *
from gateway.media.dtmf import *
cat = default_catalogue()
def t(f, N=5000):
    return min(timeit.repeat(f, number=N, repeat=3))/N*1e6
speech = (np.random.default_rng(1).standard_normal(320)*3000).astype(np.int16)
sig = tone(1000, 20)
for name in ["PCMU","PCMA","G722","opus"]:
    c = cat.get(name); enc = AudioEncoder(c); dec = AudioDecoder(c)
    p = enc.encode(speech)
    core = None
    if name in ("PCMU","PCMA"):
        core = (t(lambda: dec._decode(p)), t(lambda: enc._encode(speech[::2].copy())))
    print(f"{name:5s} decode {t(lambda: dec.decode(p)):6.1f} us  encode {t(lambda: enc.encode(speech)):6.1f} us  conceal {t(lambda: dec.conceal(320)):6.1f} us" + (f"  (table only: dec {core[0]:.1f} enc {core[1]:.1f})" if core else ""))
for a,b in [(8000,16000),(16000,8000)]:
    r=Resampler(a,b); x=tone(1000,20,a); print(f"resample {a}->{b} {t(lambda: r.resample(x)):.1f} us")
rx=DtmfReceiver(); pk=DtmfSender().packets('5')[1][0]
print(f"dtmf feed {t(lambda: rx.feed(pk, 0, False), 50000):.2f} us, parse {t(lambda: parse_event(pk), 50000):.2f} us")
