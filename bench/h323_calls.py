"""Benchmark: H.323 call handling of a running Cầu (`cau run`), driven by the H.323 test endpoint.

The gateway is the real thing: ``python -m gateway run`` in its own process group, on
ephemeral SIP/HTTP/RAS/H.323 ports, with a dial plan written here (one room, "1000",
``max_participants: 1000``). The callers are :class:`interop_tests.h323.endpoint.H323TestEndpoint`
instances in THIS process (Twisted on asyncio, ``gateway.loop.install()``): H.225.0 over TCP,
H.245 by fast start, tunnelling or a separate connection, RTP from the suite's RTP peer.

Two phases; figures are printed, nothing is asserted:

1. **Call setups per second.** For each rate R: R x ``--seconds`` calls started at R per second,
   each Setup with fast start + tunnelling → Connect, held ~``--call-hold`` s, then hung up.
   Printed: completed / failed / dropped calls, Setup→Connect time p50/p95/max (from the Setup
   being sent to Connect received: TCP connect + Q.931/H.225 + the gateway's routing and room
   join), the rate the Setups actually went out at, the gateway's CPU (% of one core from
   /proc/PID/stat utime+stime: average and worst 1 s) and this process's CPU over the same
   window. Headline: the highest rate with zero failures.
2. **Concurrent calls held.** For each N: N calls at ``--ramp-rate`` calls/s with a mix of
   profiles (VSX, HDX, G711) and H.245 modes (fast start + tunnelling, tunnelling only, a
   separate H.245 connection offered by the caller), each sending a tone (so the mixer decodes
   every leg), then all held together for ``--hold`` s. Printed: how many connected and stayed
   up, the room's participants seen by /api/status, RTP packets each endpoint received from the
   gateway per second (the mix), gateway CPU and RSS while held, this process's CPU, media
   clock late ticks, and after hang-up whether /api/status shows 0 participants and
   ``rtp_ports_in_use`` 0 (and how long that took).

The endpoints cost CPU in this process (PyAV G.722/G.711 encoders, RTP, pycrate PER, one
event loop): on a small machine this process can be the bottleneck rather than the gateway;
its CPU is printed next to the gateway's so the reader can judge.

The gateway's log (stderr) is kept; WARNING/ERROR lines are counted and the distinct ones
shown at the end.

Usage: python bench/h323_calls.py [--rates 2,5,10,20] [--seconds 5] [--concurrent 10,25,50]
                                  [--hold 8] [--ramp-rate 10] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._gateway import CLK_TCK, LOOPBACK, BenchCau, cpu_ticks, pct, problems, rss_mib, shape  # noqa: E402


ROOM_ID, ROOM_NUMBER = "bench", "1000"
DIALPLAN = """\
# written by bench/h323_calls.py
version: 1
defaults:
  max_participants: 1000
  layout: voice-switched
  audio:
    codecs: [G722, PCMU, PCMA, opus, telephone-event]
rooms:
  - id: bench
    name: "H.323 call benchmark room"
    numbers: ["1000"]
    max_participants: 1000
"""
PROFILE_MIX = ("VSX", "HDX", "G711")
MODES: dict[str, dict[str, bool]] = {   # name → H323TestEndpoint keyword arguments
    "fs+tun": {"fast_start": True, "tunnelling": True, "separate_h245": False},
    "tun": {"fast_start": False, "tunnelling": True, "separate_h245": False},
    "sep245": {"fast_start": False, "tunnelling": False, "separate_h245": True},
}


# ------------------------------------------------------------------ /proc sampling
def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuSampler:
    """The gateway's and this process's CPU every second (a thread: it keeps time even when the
    event loop is busy), the gateway's RSS, and this process's event-loop lag (a 10 ms sleep's
    overshoot: when it is large, the endpoints, not the gateway, set the pace)."""

    def __init__(self, pid: int, period: float = 1.0):
        self.pid, self.period = pid, period
        self.samples: list[float] = []  # gateway, % of one core per interval
        self.me_samples: list[float] = []  # this process, likewise
        self.rss_max = rss_mib(pid)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._c0 = cpu_ticks(pid)
        self._m0 = cpu_ticks(os.getpid())
        self._s0 = self_cpu_s()
        self._lag = asyncio.ensure_future(self._loop_lag())
        self.lags: list[float] = []  # ms: how late a 10 ms sleep of this process's event loop woke up
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_t, last_c, last_m = self._t0, self._c0, self._m0
        while not self._stop.wait(self.period):
            try:
                c = cpu_ticks(self.pid)
            except OSError:
                return
            m = cpu_ticks(os.getpid())
            t = time.monotonic()
            self.samples.append(100 * (c - last_c) / CLK_TCK / (t - last_t))
            self.me_samples.append(100 * (m - last_m) / CLK_TCK / (t - last_t))
            self.rss_max = max(self.rss_max, rss_mib(self.pid))
            last_t, last_c, last_m = t, c, m

    async def _loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(max(0.0, (loop.time() - t - 0.01) * 1000))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._lag.cancel()
        wall = time.monotonic() - self._t0
        try:
            gw = 100 * (cpu_ticks(self.pid) - self._c0) / CLK_TCK / wall
        except OSError:
            gw = float("nan")
        me = 100 * (self_cpu_s() - self._s0) / wall
        return {"gw": gw, "gw_max": max(self.samples, default=gw), "me": me,
                "me_max": max(self.me_samples, default=me), "lag_max": max(self.lags, default=float("nan")),
                "rss_max": self.rss_max, "wall": wall}


# ------------------------------------------------------------------ the gateway
class Cau(BenchCau):
    def __init__(self, workdir: Path):
        super().__init__(workdir, DIALPLAN, ROOM_ID, needs=("h323",))
        self.h323_port = self.ports["h323"]

    async def asnapshot(self) -> tuple[int, int, int]:
        return await asyncio.to_thread(self.snapshot)  # never block the loop the endpoints run on

    async def wait_idle(self, timeout: float) -> tuple[int, int, float]:
        """Until 0 participants and 0 RTP ports in use: (participants, ports, seconds waited)."""
        t0 = time.monotonic()
        while True:
            n, ports, _ = await self.asnapshot()
            if (n == 0 and ports == 0) or time.monotonic() - t0 > timeout:
                return n, ports, time.monotonic() - t0
            await asyncio.sleep(0.1)


class Endpoints:
    """Every endpoint made, so that all are closed at the end whatever happened."""

    def __init__(self) -> None:
        self.all: list[Any] = []

    def make(self, *a: Any, **kw: Any) -> Any:
        from interop_tests.h323.endpoint import H323TestEndpoint

        ep = H323TestEndpoint(*a, **kw)
        self.all.append(ep)
        return ep

    async def close(self, eps: list[Any] | None = None) -> None:
        eps = self.all if eps is None else eps
        await asyncio.gather(*(_close(ep) for ep in eps))
        for ep in eps:
            if ep in self.all:
                self.all.remove(ep)


async def _close(ep: Any) -> None:
    try:
        await asyncio.wait_for(ep.close(), 10)
    except Exception:  # noqa: BLE001 — best effort: the sockets below still get closed
        for p in (ep.audio, ep.video):
            if p is not None:
                p.close()


class CallResult:
    def __init__(self, profile: str, mode: str) -> None:
        self.profile, self.mode = profile, mode
        self.setup_ms: float | None = None      # Setup sent → Connect received
        self.error: str | None = None           # failed to connect: why
        self.dropped: str | None = None         # connected, then released before we hung up
        self.started_at = 0.0
        self.ep: Any = None


async def place(eps: Endpoints, port: int, i: int, profile: str, mode: str, tone: float | None) -> CallResult:
    """One call: media sockets first (not part of the timed set-up), then Setup → Connect."""
    r = CallResult(profile, mode)
    ep = eps.make(f"bench-{i}", profile=profile, tone_hz=tone, **MODES[mode])
    r.ep = ep
    try:
        await ep._media()                       # RTP sockets and encoders, before the Setup goes out
        r.started_at = time.monotonic()
        t0 = time.perf_counter()
        await ep.call(ROOM_NUMBER, LOOPBACK, port, timeout=15)
        r.setup_ms = (time.perf_counter() - t0) * 1000
        if ep.audio is not None:
            ep.audio.decode = False             # count the gateway's packets, don't spend CPU decoding them
    except (RuntimeError, asyncio.TimeoutError, OSError) as exc:
        r.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return r


def still_up(r: CallResult) -> bool:
    if r.setup_ms is None:
        return False
    if not r.ep.connected:
        c = r.ep.call_obj
        r.dropped = r.dropped or f"cause {c.cause} ({c.release_text})"
        return False
    return True


async def scheduled(rate: float, n: int, make_call) -> tuple[list[asyncio.Task], float]:
    """Start ``n`` calls at ``rate`` per second on a fixed schedule; returns the tasks and the rate
    the calls actually started at (their own timestamps, first to last)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks, starts = [], []
    for i in range(n):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        starts.append(time.monotonic())
        tasks.append(asyncio.ensure_future(make_call(i)))
    achieved = (n - 1) / (starts[-1] - starts[0]) if n > 1 and starts[-1] > starts[0] else float("nan")
    return tasks, achieved


# ------------------------------------------------------------------ phases
async def setup_rate(cau: Cau, eps: Endpoints, rate: int, seconds: float, hold: float, notes: list[str]) -> dict:
    n = max(1, int(round(rate * seconds)))
    log0 = cau.log_size()
    late0 = (await cau.asnapshot())[2]
    sampler = CpuSampler(cau.pid)

    async def one(i: int) -> CallResult:
        r = await place(eps, cau.h323_port, i, PROFILE_MIX[i % len(PROFILE_MIX)], "fs+tun", None)
        if r.setup_ms is not None:
            await asyncio.sleep(hold)
            still_up(r)
            await r.ep.hangup()
        await eps.close([r.ep])
        return r

    tasks, achieved = await scheduled(rate, n, one)
    results = await asyncio.gather(*tasks)
    cpu = sampler.stop()
    left, ports, waited = await cau.wait_idle(15)
    late = (await cau.asnapshot())[2] - late0
    probs = problems(cau.log_since(log0))
    ok = [r for r in results if r.setup_ms is not None and r.dropped is None]
    failed = [r for r in results if r.setup_ms is None]
    dropped = [r for r in results if r.dropped is not None]
    for r in (failed + dropped)[:3]:
        notes.append(f"rate {rate}/s: {r.profile} {r.mode}: {r.error or 'dropped: ' + str(r.dropped)}")
    if len(failed) + len(dropped) > 3:
        notes.append(f"rate {rate}/s: ... {len(failed) + len(dropped) - 3} more failed/dropped")
    return {"rate": rate, "calls": n, "ok": len(ok), "failed": len(failed), "dropped": len(dropped),
            "setup": [r.setup_ms for r in results if r.setup_ms is not None], "achieved": achieved,
            "cpu": cpu, "late": late, "left": left, "ports": ports, "waited": waited, "log_problems": len(probs)}


async def concurrent(cau: Cau, eps: Endpoints, n: int, ramp_rate: float, hold: float, notes: list[str]) -> dict:
    log0 = cau.log_size()
    rss0 = rss_mib(cau.pid)
    mode_names = list(MODES)

    def kind(i: int) -> tuple[str, str]:  # modes in turn; all 9 (profile, mode) pairs within every 9 calls
        return PROFILE_MIX[(i // 3) % 3], mode_names[i % 3]

    async def one(i: int) -> CallResult:
        profile, mode = kind(i)
        r = await place(eps, cau.h323_port, i, profile, mode, 300.0 + 50 * (i % 20))
        if r.setup_ms is not None:
            try:
                await r.ep.wait_media(10)
            except (RuntimeError, asyncio.TimeoutError) as exc:
                r.dropped = f"no media: {type(exc).__name__} {exc}"
        return r

    ramp_sampler = CpuSampler(cau.pid)
    tasks, achieved = await scheduled(ramp_rate, n, one)
    results = await asyncio.gather(*tasks)
    ramp_cpu = ramp_sampler.stop()
    await asyncio.sleep(1.0)  # jitter buffers settle, every leg's encoder exists
    _, _, late0 = await cau.asnapshot()
    rx0 = {id(r): r.ep.audio.stats.packets for r in results if r.ep.audio is not None}
    sampler = CpuSampler(cau.pid)
    await asyncio.sleep(hold)
    in_room, ports_held, late1 = await cau.asnapshot()
    cpu = sampler.stop()
    rx_rates = [(r.ep.audio.stats.packets - rx0[id(r)]) / cpu["wall"] for r in results
                if r.setup_ms is not None and r.ep.audio is not None and id(r) in rx0]
    up = [r for r in results if still_up(r)]
    failed = [r for r in results if r.setup_ms is None]
    dropped = [r for r in results if r.dropped is not None]
    for r in (failed + dropped)[:3]:
        notes.append(f"N={n}: {r.profile} {r.mode}: {r.error or 'dropped: ' + str(r.dropped)}")
    if len(failed) + len(dropped) > 3:
        notes.append(f"N={n}: ... {len(failed) + len(dropped) - 3} more failed/dropped")
    by_mode = {m: pct([r.setup_ms for r in results if r.mode == m and r.setup_ms is not None], 50) for m in MODES}
    await asyncio.gather(*(r.ep.hangup() for r in results if r.setup_ms is not None))
    await eps.close([r.ep for r in results])
    left, ports, waited = await cau.wait_idle(20)
    probs = problems(cau.log_since(log0))
    return {"n": n, "connected": sum(r.setup_ms is not None for r in results), "up": len(up),
            "failed": len(failed), "dropped": len(dropped), "in_room": in_room, "ports_held": ports_held,
            "setup": [r.setup_ms for r in results if r.setup_ms is not None], "by_mode": by_mode,
            "achieved": achieved, "ramp_cpu": ramp_cpu, "cpu": cpu, "rss0": rss0, "late": late1 - late0,
            "rx_min": min(rx_rates, default=float("nan")), "rx_med": pct(rx_rates, 50),
            "left": left, "ports": ports, "waited": waited, "log_problems": len(probs)}


async def warm_up(cau: Cau, eps: Endpoints) -> list[str]:
    """A few calls, not counted: every profile with fast start and every H.245 mode once, so that
    both sides have loaded pycrate's modules and the codecs before anything is timed."""
    out = []
    kinds = [(p, "fs+tun") for p in PROFILE_MIX] + [("HDX", m) for m in MODES if m != "fs+tun"]
    for i, (profile, mode) in enumerate(kinds):
        r = await place(eps, cau.h323_port, 900 + i, profile, mode, 1000.0)
        if r.setup_ms is not None:
            await r.ep.wait_media(10)
            await r.ep.hangup()
        out.append(f"{profile} {mode} {r.setup_ms:.0f} ms" if r.setup_ms is not None
                   else f"{profile} {mode} FAILED ({r.error})")
        await eps.close([r.ep])
    await cau.wait_idle(10)
    return out


async def run(args: argparse.Namespace, cau: Cau, eps: Endpoints) -> bool:
    rates = [int(x) for x in args.rates.split(",") if x]
    sizes = [int(x) for x in args.concurrent.split(",") if x]
    notes: list[str] = []
    print(f"warm-up calls (not counted), Setup→Connect: {', '.join(await warm_up(cau, eps))}", flush=True)

    print(f"\n1. call setups per second: {args.seconds:g} s of calls per rate (fast start + tunnelling, "
          f"profiles {'/'.join(PROFILE_MIX)} in turn), each held {args.call_hold:g} s then hung up;\n"
          f"   setup = Setup sent → Connect received; CPU in % of one core, average and worst 1 s (gateway; "
          f"bench = this process = the endpoints);\n   bench lag = worst overshoot of a 10 ms sleep in this "
          f"process's event loop (large: the endpoints set the pace, not the gateway)")
    print(f"{'rate/s':>6} {'calls':>5} {'ok':>4} {'fail':>4} {'drop':>4} {'setup p50':>9} {'p95':>7} {'max':>7} "
          f"{'achieved':>8} {'gw CPU':>7} {'gw max1s':>8} {'bench CPU':>9} {'max1s':>6} {'bench lag':>9} "
          f"{'late ticks':>10} {'after':>10}",
          flush=True)
    rate_results = []
    for rate in rates:
        r = await setup_rate(cau, eps, rate, args.seconds, args.call_hold, notes)
        rate_results.append(r)
        c = r["cpu"]
        print(f"{rate:>6} {r['calls']:>5} {r['ok']:>4} {r['failed']:>4} {r['dropped']:>4} "
              f"{pct(r['setup'], 50):>7.1f}ms {pct(r['setup'], 95):>5.1f}ms {max(r['setup'], default=float('nan')):>5.0f}ms "
              f"{r['achieved']:>6.1f}/s {c['gw']:>6.1f}% {c['gw_max']:>7.1f}% {c['me']:>8.1f}% {c['me_max']:>5.0f}% "
              f"{c['lag_max']:>7.0f}ms {r['late']:>10} "
              f"{r['left']:>3}p/{r['ports']}rtp", flush=True)
    good = [r["rate"] for r in rate_results if r["failed"] == 0 and r["dropped"] == 0]
    print(f"highest rate with zero failures: {max(good) if good else 'none'} calls/s (of {args.rates})", flush=True)

    print(f"\n2. concurrent calls: ramp {args.ramp_rate:g} calls/s, then all held {args.hold:g} s; mix of profiles "
          f"{'/'.join(PROFILE_MIX)} x H.245 modes {'/'.join(MODES)} (sep245 = caller offers its own H.245 address, no "
          f"tunnelling);\n   every call sends a tone; rx = RTP packets/s each endpoint got from the gateway "
          f"(min / median; 50 = every 20 ms frame); CPU and RSS over the held window")
    print(f"{'N':>4} {'conn':>4} {'up':>4} {'fail':>4} {'drop':>4} {'in room':>7} {'setup p50':>9} {'p95':>7} "
          f"{'rx min/med':>10} {'gw CPU':>7} {'gw max1s':>8} {'bench CPU':>9} {'max1s':>6} {'bench lag':>9} "
          f"{'RSS before':>10} {'RSS held':>8} "
          f"{'late ticks':>10} {'after (wait)':>15}", flush=True)
    held = []
    for n in sizes:
        r = await concurrent(cau, eps, n, args.ramp_rate, args.hold, notes)
        held.append(r)
        c = r["cpu"]
        print(f"{n:>4} {r['connected']:>4} {r['up']:>4} {r['failed']:>4} {r['dropped']:>4} {r['in_room']:>7} "
              f"{pct(r['setup'], 50):>7.1f}ms {pct(r['setup'], 95):>5.1f}ms {r['rx_min']:>4.0f}/{r['rx_med']:<5.0f} "
              f"{c['gw']:>6.1f}% {c['gw_max']:>7.1f}% {c['me']:>8.1f}% {c['me_max']:>5.0f}% {c['lag_max']:>7.0f}ms "
              f"{r['rss0']:>7.0f}MiB {c['rss_max']:>5.0f}MiB "
              f"{r['late']:>10} {r['left']:>4}p/{r['ports']}rtp ({r['waited']:.1f}s)", flush=True)
    print("   setup p50 by mode: " + "; ".join(
        f"N={r['n']}: " + ", ".join(f"{m} {v:.1f}ms" for m, v in r["by_mode"].items()) for r in held))
    print("   during the ramp: " + "; ".join(
        f"N={r['n']}: {r['achieved']:.1f} calls/s, gw CPU {r['ramp_cpu']['gw']:.0f}%, "
        f"bench CPU {r['ramp_cpu']['me']:.0f}% (max 1 s {r['ramp_cpu']['me_max']:.0f}%), "
        f"bench loop lag max {r['ramp_cpu']['lag_max']:.0f} ms" for r in held))
    clean_held = [r["n"] for r in held if r["failed"] == 0 and r["dropped"] == 0 and r["up"] == r["n"]]
    print(f"most calls held together without a failure: {max(clean_held) if clean_held else 'none'} "
          f"(of {args.concurrent}); ended cleanly (0 participants, 0 RTP ports): "
          f"{'yes' if all(r['left'] == 0 and r['ports'] == 0 for r in held) else 'NO'}", flush=True)

    lines = cau.log_since(0)
    probs = problems(lines)
    print(f"\ngateway log: {len(lines)} lines, {len(probs)} WARNING/ERROR ({cau.log_path})")
    groups: dict[str, list[str]] = {}
    for ln in probs:
        groups.setdefault(shape(ln), []).append(ln)
    for same in sorted(groups.values(), key=len, reverse=True)[:8]:
        print(f"  x{len(same):<5} {same[0][:220]}")
    if notes:
        print("notes:")
        for note in notes:
            print(f"  {note}")
    return not notes and not probs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="2,5,10,20", help="call setup rates, calls/s")
    ap.add_argument("--seconds", type=float, default=5, help="seconds of calls per rate (R x this calls)")
    ap.add_argument("--call-hold", type=float, default=1.0, help="phase 1: seconds each call stays up")
    ap.add_argument("--concurrent", default="10,25,50", help="concurrent call counts")
    ap.add_argument("--hold", type=float, default=8, help="phase 2: seconds all N calls are up together")
    ap.add_argument("--ramp-rate", type=float, default=10, help="phase 2: calls/s while building up the N calls")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) even when all is clean")
    args = ap.parse_args()

    from gateway import loop as _loop

    loop = _loop.install()
    work = Path(tempfile.mkdtemp(prefix="cau-bench-h323-"))
    cau: Cau | None = None
    eps = Endpoints()
    clean = False

    def on_term(signum, frame):  # SIGTERM: same clean-up as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        la = Path("/proc/loadavg").read_text().split()
        print(f"H.323 call benchmark: cau run vs H323TestEndpoint (this process, {_loop.loop_name(loop)}) on "
              f"loopback; {os.cpu_count()} cores; load average at start {' '.join(la[:3])}", flush=True)
        cau = Cau(work)
        print(f"gateway pid {cau.pid}: H.323 {LOOPBACK}:{cau.h323_port}/tcp, HTTP {cau.http_port}; "
              f"RSS at start {rss_mib(cau.pid):.0f} MiB; work dir {work}", flush=True)
        clean = loop.run_until_complete(run(args, cau, eps))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: closing the endpoints and stopping the gateway", file=sys.stderr)
        return 130
    finally:
        try:
            if eps.all:
                loop.run_until_complete(asyncio.wait_for(eps.close(), 20))
        except BaseException:  # noqa: BLE001 — still stop the gateway below
            pass
        if cau is not None:
            cau.stop()
        if clean and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
