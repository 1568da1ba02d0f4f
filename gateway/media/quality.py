"""Call quality per leg, as an operator reads it: loss, jitter, delay and an estimated MOS.

The MOS is the ITU-T G.107 E-model in its usual simplified form (as VoIP
monitors compute it from RTP/RTCP figures; Cole & Rosenbluth, 2001):

    R   = 93.2 - Id - Ie_eff
    Id  = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)         d: one-way delay, ms
    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl)           Ppl: packet loss, %
    MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)         (1 <= MOS <= 4.5)

with Ie = 0 and Bpl = 25.1 (G.711 with packet loss concealment, G.113
Appendix I) for every codec: it is the narrowband scale, a figure to compare
sites and see a bad line at a glance, not a wideband listening test.

Two directions per leg:
- ``rx``: what the bridge receives from the site (what the others hear of it):
  loss = packets that never came + packets the jitter buffer got too late,
  delay = half the round-trip time + how long frames wait in the jitter buffer
  + 20 ms packet;
- ``tx``: what the site receives from the bridge, from its RTCP receiver
  reports (loss and jitter it measured); ``None`` until it has sent one.
"""
from __future__ import annotations

from typing import Any

PACKET_MS = 20.0
_IE, _BPL = 0.0, 25.1


def r_factor(delay_ms: float, loss_pct: float, ie: float = _IE, bpl: float = _BPL) -> float:
    """E-model transmission rating R (G.107, simplified) for one-way ``delay_ms`` and ``loss_pct``."""
    d = max(0.0, delay_ms)
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = min(100.0, max(0.0, loss_pct))
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    return 93.2 - idd - ie_eff


def mos_from_r(r: float) -> float:
    """Estimated MOS (1..4.5) from the rating R."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, min(4.5, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)))


def leg_quality(stats: Any) -> dict[str, Any]:
    """Figures for one leg's audio from its stream's typed stats
    (:class:`~gateway.conference.leg.StreamStats`), JSON-ready."""
    s = stats
    expected = s.packets_received + max(0, s.packets_lost)
    missing = max(0, s.packets_lost) + s.late
    rx_loss = 100.0 * missing / expected if expected else 0.0
    rtt = s.rtt_ms
    half_rtt = rtt / 2 if rtt is not None else 0.0
    rx_delay = half_rtt + s.buffer_ms + PACKET_MS
    out: dict[str, Any] = {
        "rx": {
            "packets": s.packets_received,
            "lost": max(0, s.packets_lost),
            "late": s.late,
            "loss_pct": round(rx_loss, 2),
            "jitter_ms": round(s.jitter_ms, 1),
            "buffer_ms": round(s.buffer_ms, 1),
            "concealed": s.concealed,
            "mos": round(mos_from_r(r_factor(rx_delay, rx_loss)), 2),
        },
        "tx": None,
        "rtt_ms": None if rtt is None else round(rtt, 1),
    }
    if s.remote_fraction_lost is not None:
        tx_loss = 100.0 * s.remote_fraction_lost
        tx_jitter = s.remote_jitter_ms or 0.0
        # the far end's buffer is unknown: take twice the jitter it reports, at least a packet
        tx_delay = half_rtt + max(PACKET_MS, 2 * tx_jitter) + PACKET_MS
        out["tx"] = {
            "packets": s.packets_sent,
            "loss_pct": round(tx_loss, 2),
            "jitter_ms": round(tx_jitter, 1),
            "mos": round(mos_from_r(r_factor(tx_delay, tx_loss)), 2),
        }
    return out
