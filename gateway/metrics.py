"""``/metrics`` for Prometheus (prometheus-client): read from the gateway's own state at scrape time.

Nothing is counted twice: a collector walks the rooms, the SIP and H.323 counters, the media
clock, the port allocator, the registrar and the gatekeeper when Prometheus asks, and the only
series kept here are the ones with no other home (call set-up time, dial plan reloads).

Label sets are bounded: protocols and codecs come from closed lists; per-site quality is labelled
with the dial plan's endpoint alias (a checked identity, so at most the plan's size) and every
anonymous caller is folded into ``site="anonymous"`` (its worst figures).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["GatewayMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PROTOCOLS = ("sip", "h323", "webrtc")


def _codec_name(text: str | None) -> str:
    """'PCMU/8000 (pt 0)' → 'PCMU'; anything else → 'other' (bounded)."""
    if not text:
        return "none"
    name = text.split("/", 1)[0].split(" ", 1)[0]
    return name if name.replace("-", "").replace(".", "").isalnum() and len(name) <= 16 else "other"


class _Collector:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway

    def describe(self) -> list:          # no up-front description: families come from state
        return []

    def collect(self) -> Iterator[Any]:
        gw = self.gw
        rooms = list(gw.registry.rooms.values())
        yield GaugeMetricFamily("cau_rooms", "Rooms open now", value=len(rooms))
        parts = GaugeMetricFamily("cau_participants", "Participants now, by protocol and audio codec",
                                  labels=["protocol", "codec"])
        mos = GaugeMetricFamily("cau_site_mos", "Estimated MOS of what the gateway receives from a site",
                                labels=["site"])
        loss = GaugeMetricFamily("cau_site_loss_ratio", "Audio packet loss of a site (0..1)",
                                 labels=["site", "direction"])
        jitter = GaugeMetricFamily("cau_site_jitter_seconds", "Interarrival jitter of a site's audio",
                                   labels=["site"])
        counts: dict[tuple[str, str], int] = {}
        sites: dict[str, dict[str, float]] = {}
        for room in rooms:
            for p in room.roster():
                protocol = p.get("protocol") if p.get("protocol") in _PROTOCOLS else "other"
                codec = _codec_name(p.get("audio"))
                counts[(protocol, codec)] = counts.get((protocol, codec), 0) + 1
                q = p.get("quality") or {}
                rx = q.get("rx") or {}
                if not rx:
                    continue
                site = p.get("identity") or "anonymous"
                s = sites.setdefault(site, {"mos": 5.0, "rx": 0.0, "tx": 0.0, "jitter": 0.0})
                s["mos"] = min(s["mos"], float(rx.get("mos", 5.0)))
                s["rx"] = max(s["rx"], float(rx.get("loss_pct", 0.0)) / 100)
                s["jitter"] = max(s["jitter"], float(rx.get("jitter_ms", 0.0)) / 1000)
                tx = q.get("tx") or {}
                if tx:
                    s["tx"] = max(s["tx"], float(tx.get("loss_pct", 0.0)) / 100)
        for (protocol, codec), n in sorted(counts.items()):
            parts.add_metric([protocol, codec], n)
        for site, s in sorted(sites.items()):
            mos.add_metric([site], s["mos"])
            loss.add_metric([site, "rx"], s["rx"])
            loss.add_metric([site, "tx"], s["tx"])
            jitter.add_metric([site], s["jitter"])
        yield parts
        yield mos
        yield loss
        yield jitter

        calls = CounterMetricFamily("cau_calls", "Incoming calls by protocol and result", labels=["protocol", "result"])
        sip = getattr(gw, "sip", None)
        if sip is not None:
            st = sip.stats
            calls.add_metric(["sip", "answered"], st.get("answered", 0))
            calls.add_metric(["sip", "refused"], st.get("refused", 0))
            calls.add_metric(["sip", "evicted"], st.get("evicted", 0))
        h323 = getattr(gw, "h323", None)
        if h323 is not None:
            calls.add_metric(["h323", "answered"], h323.stats.get("answered", 0))
            calls.add_metric(["h323", "refused"], h323.stats.get("refused", 0))
        yield calls

        clock = gw.clock.stats
        yield GaugeMetricFamily("cau_media_tick_lateness_max_seconds",
                                "The latest media clock tick so far (event loop lag)",
                                value=clock.max_lateness_ms / 1000)
        late = CounterMetricFamily("cau_media_ticks_late", "Media clock ticks that fired late", labels=["over"])
        late.add_metric(["20ms"], clock.late_over_20ms)
        late.add_metric(["100ms"], clock.late_over_100ms)
        yield late
        yield CounterMetricFamily("cau_media_ticks", "Media clock ticks (20 ms of audio each)", value=clock.ticks)
        ports = gw.ports
        yield GaugeMetricFamily("cau_rtp_ports_in_use", "RTP/RTCP ports in use", value=ports.in_use * 2)
        yield GaugeMetricFamily("cau_rtp_ports", "RTP/RTCP ports in the range", value=ports.high - ports.low + 1)

        regs = GaugeMetricFamily("cau_registrations", "Endpoints registered now", labels=["protocol"])
        registrar = getattr(sip, "registrar", None) if sip is not None else None
        if registrar is not None:
            registrar.purge()
            regs.add_metric(["sip"], sum(len(v) for v in registrar.bindings.values()))
        gk = getattr(gw, "gatekeeper", None)
        if gk is not None:
            regs.add_metric(["h323"], len(gk.registrations))
        yield regs

        security = CounterMetricFamily("cau_wrong_secrets", "Wrong PINs and passwords", labels=["kind"])
        security.add_metric(["pin"], gw.registry.pin_guard.stats["failures"])
        security.add_metric(["password"], gw.password_guard.stats["failures"])
        yield security
        yield GaugeMetricFamily("cau_security_alarms", "Rooms and accounts under a guessing attack now",
                                value=len(gw.registry.pin_guard.alarms() + gw.password_guard.alarms()))
        webrtc = getattr(gw, "webrtc", None)
        if webrtc is not None:
            yield GaugeMetricFamily("cau_webrtc_sessions", "Browser (WHIP/WHEP) sessions now",
                                    value=len(webrtc.status()))
        yield GaugeMetricFamily("cau_uptime_seconds", "Seconds since the gateway started",
                                value=time.monotonic() - gw.started)


class GatewayMetrics:
    """The gateway's Prometheus registry: live state, process figures, set-up times, reloads."""

    def __init__(self, gateway: "Gateway") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(gateway))
        ProcessCollector(registry=self.registry)
        self.setup_seconds = Histogram(
            "cau_call_setup_seconds", "From a call's first message to its joining the room",
            ["protocol"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry)
        self.reloads = Counter("cau_dialplan_reloads", "Dial plan reloads by result", ["result"],
                               registry=self.registry)
        for result in ("ok", "refused"):
            self.reloads.labels(result)
        for protocol in _PROTOCOLS:
            self.setup_seconds.labels(protocol)

    def joined(self, protocol: str, seconds: float) -> None:
        if protocol in _PROTOCOLS and 0 <= seconds < 3600:
            self.setup_seconds.labels(protocol).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
