"""Alerts: what an operator must notice without watching every row.

- ``quality``: a site whose audio, as the bridge receives it, stays bad (estimated MOS below
  ``alert_mos_below`` or loss above ``alert_loss_above`` %, over the last few seconds — not since
  the call began) for ``alert_after`` seconds; cleared when it has been good as long;
- ``registration``: a dial-plan endpoint that was registered (SIP registrar or gatekeeper) and no
  longer is, not because it is in a call; cleared when it registers again;
- ``cascade``: a room's link into another MCU failed or dropped; cleared when it is up again;
- ``security``: a room's PIN or an account under a guessing attack (the guards' alarms).

Each one is a log line (``cau.alerts``, WARNING when raised, INFO when cleared), an ``alert``
event on ``/api/events`` (the console highlights it), and, with ``alert_webhook`` set, a JSON POST
to that URL (at most :data:`WEBHOOKS_IN_FLIGHT` at once, 5 s each; a failing hook is logged
once with a count and never slows the media).
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import task

from gateway.media.quality import PACKET_MS, mos_from_r, r_factor
from gateway.repeated import RepeatedLog

if TYPE_CHECKING:  # pragma: no cover
    from gateway.app import Gateway

log = logging.getLogger("cau.alerts")
_repeated = RepeatedLog(log, every=100)

#: seconds between checks
CHECK_EVERY = 1.0
#: webhook POSTs under way at once (more are dropped and counted)
WEBHOOKS_IN_FLIGHT = 8
#: alerts kept for the console (the most recent)
KEEP = 200


class _Line:
    """One leg's recent audio: the counters at the last check, and since when it is bad / good."""

    __slots__ = ("received", "missing", "bad_since", "good_since", "window")

    def __init__(self) -> None:
        self.received = 0
        self.missing = 0
        self.bad_since: float | None = None
        self.good_since: float | None = None
        self.window: list[tuple[int, int]] = []     # (received, missing) per check, the last few


class Alerts:
    def __init__(self, gateway: "Gateway", *, mos_below: float = 3.6, loss_above: float = 3.0,
                 after: float = 15.0, webhook: str = "", clock: Any = time.monotonic) -> None:
        self.gateway = gateway
        self.mos_below = mos_below
        self.loss_above = loss_above
        self.after = after
        self.webhook = webhook
        self.clock = clock
        self.active: dict[str, dict[str, Any]] = {}
        self.recent: list[dict[str, Any]] = []
        self.stats = {"raised": 0, "cleared": 0, "webhooks_sent": 0, "webhooks_failed": 0, "webhooks_dropped": 0}
        self._lines: dict[str, _Line] = {}
        self._registered: set[str] = set()
        self._in_flight = 0
        self._agent: Any = None
        gateway.registry.on("room_closed", lambda room: self.clear(f"cascade:{room.id}", f"room {room.id} closed"))
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = gateway.reactor
        self._loop.start(CHECK_EVERY, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    # -- raising and clearing --------------------------------------------------------------
    def raise_(self, key: str, kind: str, message: str, *, severity: str = "warning", **about: Any) -> None:
        if key in self.active:
            return
        rec = {"key": key, "kind": kind, "severity": severity, "message": message, "time": time.time(),
               "active": True, **{k: v for k, v in about.items() if v is not None}}
        self.active[key] = rec
        self.stats["raised"] += 1
        log.warning("ALERT %s: %s", kind, message)
        self._publish(rec)

    def clear(self, key: str, message: str) -> None:
        rec = self.active.pop(key, None)
        if rec is None:
            return
        done = {**rec, "active": False, "message": message, "time": time.time(), "raised_at": rec["time"]}
        self.stats["cleared"] += 1
        log.info("alert cleared (%s): %s", rec["kind"], message)
        self._publish(done)

    def _publish(self, rec: dict[str, Any]) -> None:
        self.recent.append(rec)
        del self.recent[:-KEEP]
        hub = getattr(self.gateway, "events", None)
        if hub is not None:
            hub.alerts = [a for a in hub.alerts if a["key"] != rec["key"]] + [rec] if rec["active"] else \
                [a for a in hub.alerts if a["key"] != rec["key"]]
            hub.publish("alert", rec)
        if self.webhook:
            self._post(rec)

    def _post(self, rec: dict[str, Any]) -> None:
        if self._in_flight >= WEBHOOKS_IN_FLIGHT:
            self.stats["webhooks_dropped"] += 1
            _repeated("dropped", logging.WARNING, "alert webhook %s: too many posts under way; an alert was "
                      "not posted", self.webhook)
            return
        from twisted.web.client import Agent, FileBodyProducer
        from twisted.web.http_headers import Headers
        import io

        if self._agent is None:
            self._agent = Agent(self.gateway.reactor, connectTimeout=5)
        body = json.dumps({"source": "cau", "host": self.gateway.advertised_host(), **rec},
                          ensure_ascii=False, default=str).encode()
        self._in_flight += 1
        d = self._agent.request(b"POST", self.webhook.encode(), Headers({
            b"content-type": [b"application/json; charset=utf-8"], b"user-agent": [b"cau-alerts"]}),
            FileBodyProducer(io.BytesIO(body)))
        d.addTimeout(5, self.gateway.reactor)

        def done(response: Any) -> None:
            if 200 <= response.code < 300:
                self.stats["webhooks_sent"] += 1
            else:
                self.stats["webhooks_failed"] += 1
                _repeated(("status", response.code), logging.WARNING, "alert webhook %s answered %d",
                          self.webhook, response.code)
            response.deliverBody(_Discard())

        def failed(f: Any) -> None:
            self.stats["webhooks_failed"] += 1
            _repeated(("error", f.type), logging.WARNING, "alert webhook %s: %s", self.webhook, f.getErrorMessage())

        def finally_(_: Any) -> None:
            self._in_flight -= 1

        d.addCallbacks(done, failed)
        d.addBoth(finally_)

    # -- the checks ------------------------------------------------------------------------
    def check(self) -> None:
        try:
            self._check_quality()
            self._check_registrations()
            self._check_security()
        except Exception:   # an alert check must never stop the loop
            log.exception("alert check failed")

    def _check_quality(self) -> None:
        now = self.clock()
        seen: set[str] = set()
        for room in list(self.gateway.registry.rooms.values()):
            for leg in list(room.legs.values()):
                audio = leg.audio
                if audio is None or audio.stats_provider is None:
                    continue
                try:
                    s = audio.stats
                except Exception:
                    continue
                seen.add(leg.id)
                line = self._lines.get(leg.id)
                received, missing = s.packets_received, max(0, s.packets_lost) + s.late
                if line is None:
                    line = self._lines[leg.id] = _Line()
                    line.received, line.missing = received, missing
                    continue
                line.window.append((received - line.received, missing - line.missing))
                line.received, line.missing = received, missing
                del line.window[:-5]                    # the last five seconds
                got = sum(w[0] for w in line.window)
                lost = sum(w[1] for w in line.window)
                if got + lost < 25:                     # too little to judge (a muted or silent sender)
                    continue
                loss = 100.0 * lost / (got + lost)
                rtt = s.rtt_ms
                mos = mos_from_r(r_factor((rtt / 2 if rtt else 0.0) + s.buffer_ms + PACKET_MS, loss))
                bad = mos < self.mos_below or loss > self.loss_above
                key = f"quality:{leg.id}"
                who = leg.display_name or leg.identity or leg.id
                if bad:
                    line.good_since = None
                    line.bad_since = line.bad_since or now
                    if now - line.bad_since >= self.after:
                        self.raise_(key, "quality", f"{who} in {room.id}: audio MOS {mos:.2f}, loss {loss:.1f} % "
                                    f"(for {now - line.bad_since:.0f} s)", room=room.id, participant=leg.id,
                                    site=leg.identity, mos=round(mos, 2), loss_pct=round(loss, 1))
                else:
                    line.bad_since = None
                    line.good_since = line.good_since or now
                    if key in self.active and now - line.good_since >= self.after:
                        self.clear(key, f"{who} in {room.id}: audio good again (MOS {mos:.2f}, loss {loss:.1f} %)")
        for leg_id in list(self._lines):
            if leg_id not in seen:
                del self._lines[leg_id]
                key = f"quality:{leg_id}"
                if key in self.active:
                    self.clear(key, f"{self.active[key].get('site') or leg_id}: the call ended")

    def _check_registrations(self) -> None:
        from gateway.api.console import endpoint_states

        view = endpoint_states(self.gateway)
        now = {e["alias"]: e for g in view["groups"] for e in g["endpoints"]}
        registered = {a for a, e in now.items() if e["registered"]}
        for alias in self._registered - registered:
            e = now.get(alias)
            if e is None:
                continue        # no longer in the plan
            if e["state"] == "in_call":
                continue
            self.raise_(f"registration:{alias}", "registration",
                        f"{e['name']} ({alias}) is no longer registered", site=alias)
        for alias in registered:
            if f"registration:{alias}" in self.active:
                self.clear(f"registration:{alias}", f"{now[alias]['name']} ({alias}) registered again")
        self._registered = registered

    def _check_security(self) -> None:
        gw = self.gateway
        alarms = gw.registry.pin_guard.alarms() + gw.password_guard.alarms()
        live = set()
        for a in alarms:
            if not a["locked"]:
                continue
            key = f"security:{a['kind']}:{a['name']}"
            live.add(key)
            self.raise_(key, "security", f"{a['failures']} wrong {a['secret']}s for {a['kind']} {a['name']} "
                        f"from {a['sources']} source(s): locked for {a['locked_for_s']} s", severity="critical")
        for key in [k for k in self.active if k.startswith("security:") and k not in live]:
            self.clear(key, self.active[key]["message"].split(":")[0] + ": the lockout is over")

    # -- cascade (called by the cascade code) ----------------------------------------------
    def cascade(self, room_id: str, target: str, up: bool, why: str = "") -> None:
        key = f"cascade:{room_id}"
        if up:
            self.clear(key, f"room {room_id}: the link into {target} is up")
        else:
            self.raise_(key, "cascade", f"room {room_id}: the link into {target} {why}", severity="critical",
                        room=room_id)

    def info(self) -> dict[str, Any]:
        return {"active": list(self.active.values()), **self.stats}


class _Discard:
    """A response body nobody reads."""

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        pass

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        pass
