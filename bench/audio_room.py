"""Benchmark: one audio room with N participants, 3 of them talking, real UDP on loopback.

The gateway side (a child process: ``--serve``) is the media plane as the
adapters use it: one RtpSession + AudioStream per leg, one Room with the
AudioMixer, one MediaClock, Twisted on uvloop. The participants (this process)
are independent RTP peers from ``interop_tests.peers.rtp_participant``: a codec
mix of 40 % G.711 (PCMU/PCMA), 30 % G.722, 30 % Opus; three talk, the rest send
(encoded) silence as real endpoints without DTX do.

Figures printed per N (nothing is asserted):
- CPU of the gateway process per participant and in total (% of one core),
  from getrusage over the measured window;
- late ticks (a 20 ms tick that fired > 5 ms late) and missed/caught-up ticks,
  and how many of the late ones had the CPU taken from us meanwhile: by the
  hypervisor (steal time in /proc/stat grew since the previous tick) or by other
  processes (our run-queue wait in /proc/self/schedstat grew by > 1 ms);
- mixer tick time p50/p99 (the mixing work itself, codecs included);
- added latency p50/p99: a talker switches its tone between two frequencies
  every 500 ms; a listener on another codec plays each packet as it arrives and
  times when it hears the switch, against when it would have heard it had the
  talker's packets come to it directly. That difference is what the gateway adds
  (jitter buffer, tick wait, decode, mix, encode; loopback adds ~0). It depends
  on the *phase*: how long after the talker's send the gateway's tick falls
  (random per run: the gateway starts its clock after a random pause), which is
  printed too;
- memory per participant (gateway RSS growth / N).

Usage: python bench/audio_room.py [--sizes 10,50,200] [--seconds 10] [--repeat 1]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIX = [("PCMU", 0)] * 2 + [("PCMA", 8)] * 2 + [("G722", 9)] * 3 + [("opus", 111)] * 3  # 40/30/30
F1, F2, SWITCH_S = 700.0, 1300.0, 0.5
# Measuring starts after this: jitter buffers start at 40 ms and shed what the packets do
# not need on quiet frames; a talker who never pauses (the timed tone) is shed within ~3 s.
WARMUP_S = 4.0


def codec_plan(n: int) -> list[tuple[str, int]]:
    return [MIX[i % len(MIX)] for i in range(n)]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------- gateway side
def serve(n: int, seconds: float) -> None:
    from gateway import loop as _loop

    _loop.install()
    from twisted.internet import reactor, stdio  # noqa: F401

    from gateway.catalogue import default_catalogue
    from gateway.conference.plane import media_plane
    from gateway.conference.rtp_media import audio_leg
    from gateway.dialplan import load_dialplan
    from gateway.media.codecs import MediaFormat
    from gateway.media.rtp import open_rtp_session
    from gateway.resources import default_dialplan

    cat = default_catalogue()
    spec = load_dialplan(default_dialplan()).room("demo")
    base = random.randrange(20000, 40000, 2)
    plane = media_plane((base, base + 2 * n + 100), grace_period=60)  # as gateway.app wires it
    allocator, clock, registry = plane.ports, plane.clock, plane.registry
    rss0 = rss_kib()
    legs = []
    for codec, pt in codec_plan(n):
        c = cat.get(codec)
        session = open_rtp_session(allocator, clock_rate=c.clock_rate, timeout=60)
        leg = audio_leg(session, MediaFormat(c, pt), display_name=codec)
        registry.join(type(spec)(**{**spec.__dict__, "max_participants": n + 10}), leg)
        legs.append(leg)
    room = next(iter(registry.rooms.values()))
    print(json.dumps({"ports": [leg.audio.source.session.local_port for leg in legs]}), flush=True)
    remotes = json.loads(sys.stdin.readline())["ports"]
    for leg, port in zip(legs, remotes):
        leg.audio.source.session.set_remote("127.0.0.1", port)
    time.sleep(random.uniform(0.0, 0.020))  # a random phase between their sends and our ticks
    clock.start()
    rss1 = rss_kib()
    result: dict = {}
    gc_pauses: list[float] = []  # (ms) of every collection in the measured window
    gc_t: list[float] = [0.0]

    def gc_watch(phase: str, info: dict) -> None:
        if phase == "start":
            gc_t[0] = time.perf_counter()
        elif "t0" in result:
            gc_pauses.append((time.perf_counter() - gc_t[0]) * 1000.0)

    gc.callbacks.append(gc_watch)

    cpu_taken = {"steal": 0, "runq": 0}
    prev = [clock.stats.late_ticks, *_cpu_taken()]

    def watch_tick() -> None:  # after the room's tick: was this one late, and why?
        late, steal, runq = clock.stats.late_ticks, *_cpu_taken()
        if late > prev[0] and "t0" in result:
            if steal > prev[1]:
                cpu_taken["steal"] += 1
            elif runq - prev[2] > 1_000_000:
                cpu_taken["runq"] += 1
        prev[:] = [late, steal, runq]

    clock.subscribe(watch_tick)

    def begin() -> None:  # after the warm-up (jitter buffers settle, encoders exist)
        result["cpu0"] = _cpu()
        result["t0"] = time.monotonic()
        result["stats0"] = (clock.stats.ticks, clock.stats.late_ticks, clock.stats.missed + clock.stats.skipped)
        result["rss_warm"] = rss_kib()
        result["steal0"] = _cpu_taken()[0]

    def end() -> None:
        cpu = _cpu() - result["cpu0"]
        wall = time.monotonic() - result["t0"]
        ticks0, late0, missed0 = result["stats0"]
        ticks = clock.stats.ticks - ticks0
        jb_lost = sum(leg.audio.source.jitter.stats.lost for leg in legs)
        jb_late = sum(leg.audio.source.jitter.stats.late for leg in legs)
        print(json.dumps({
            "n": n, "wall_s": wall, "cpu_s": cpu,
            "ticks": ticks, "late_ticks": clock.stats.late_ticks - late0,
            "missed_ticks": clock.stats.missed + clock.stats.skipped - missed0,
            "max_lateness_ms": clock.stats.max_lateness_ms,
            "tick_p50_us": room.mixer.stats.tick_time_us_p50, "tick_p99_us": room.mixer.stats.tick_time_us_p99,
            "encodes_per_tick": room.mixer.stats.encodes_per_tick,
            "rss_kib_per_leg": (result["rss_warm"] - rss0) / n, "rss_setup_kib_per_leg": (rss1 - rss0) / n,
            "jb_lost": jb_lost, "jb_late": jb_late,
            "jb_underruns": sum(leg.audio.source.jitter.stats.underruns for leg in legs),
            "jb_guard_ms": sum(leg.audio.source.jitter.stats.guard_ms for leg in legs) / n,
            "jb_slack_ms": sum(leg.audio.source.jitter.stats.slack_ms for leg in legs) / n,
            "jb_shed": sum(leg.audio.source.jitter.stats.drift_adjustments for leg in legs),
            "speakers": list(room.mixer.speakers),
            "jb_depth_ms": sum(leg.audio.source.jitter.stats.depth_ms for leg in legs) / n,
            "jb_now_ms": sum(leg.audio.source.jitter.stats.current_ms for leg in legs) / n,
            "gc_runs": len(gc_pauses), "gc_max_ms": max(gc_pauses, default=0.0),
            "late_steal": cpu_taken["steal"], "late_runq": cpu_taken["runq"],
            # CPU time the hypervisor gave to others, % of the machine over the window
            "steal_pct": (_cpu_taken()[0] - result["steal0"]) / (wall * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)) * 100,
            "clock_origin": clock.origin,
        }), flush=True)
        reactor.stop()

    reactor.callLater(WARMUP_S, begin)
    reactor.callLater(WARMUP_S + seconds, end)
    profile_to = os.environ.get("CAU_BENCH_PROFILE")
    if profile_to:  # where does the gateway side spend its time? (cProfile stats file)
        import cProfile

        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, profile_to)
    else:
        reactor.run()


def _cpu_taken() -> tuple[int, int]:
    """(steal jiffies of all CPUs, ns this process waited on a run queue)."""
    with open("/proc/stat") as f:
        steal = int(f.readline().split()[8])
    with open("/proc/self/schedstat") as f:
        runq = int(f.read().split()[1])
    return steal, runq


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------- participants side
async def drive(n: int, seconds: float, proc: subprocess.Popen) -> dict:
    from interop_tests.peers.rtp_participant import RtpParticipant

    gw_ports = json.loads(proc.stdout.readline())["ports"]
    parts = []
    for i, (codec, pt) in enumerate(codec_plan(n)):
        p = RtpParticipant(codec, pt, seed=i)
        await p.start()
        p.set_remote("127.0.0.1", gw_ports[i])
        p.cache_silence = True
        p.decode = False
        parts.append(p)
    # talkers: the first G.722, Opus and PCMU participants; listener for latency: the first PCMA one
    talkers = [next(p for p in parts if p.codec == c) for c in ("G722", "opus", "PCMU")]
    listener = next(p for p in parts if p.codec == "PCMA")
    listener.decode = True
    timed = talkers[0]
    signal_f1 = _tone(F1, timed.rate, SWITCH_S)
    signal_f2 = _tone(F2, timed.rate, SWITCH_S)
    timed._signal = np.concatenate([signal_f1, signal_f2])
    timed._pos = 0
    for k, t in enumerate(talkers[1:]):
        t.play_tone(400 + 150 * k, level_dbfs=-24)  # quieter background talkers
    proc.stdin.write(json.dumps({"ports": [p.port for p in parts]}) + "\n")
    proc.stdin.flush()
    # 200 endpoints in one process would share its garbage collector's pauses (a full
    # collection here took ~30 ms): all their packets late at once, which no real set of
    # endpoints does. No collection while they send (reference counting frees the rest).
    gc.collect()
    gc.freeze()
    gc.disable()

    switches: list[float] = []  # send times of F1→F2 and F2→F1 switches
    sends: list[float] = []  # when the timed talker's packets went
    loop = asyncio.get_event_loop()
    start = loop.time()
    frame = 0
    period = int(timed.rate * SWITCH_S)
    total = int((seconds + WARMUP_S + 0.5) / 0.02)
    while frame < total:
        pos_before = timed._pos
        sent_at = time.monotonic()
        for p in parts:
            if p is timed:
                sends.append(time.monotonic())
            p.send_frame()
        # did the timed talker's tone switch inside this frame? (its signal is F1 then F2, `period` each)
        into = pos_before % period
        # (switches inside the gateway's measured window only: it stops at its end)
        in_window = WARMUP_S <= frame * 0.02 < WARMUP_S + seconds - 0.2
        if in_window and (into == 0 or into + timed.samples > period):
            offset = 0 if into == 0 else period - into
            switches.append(sent_at + offset / timed.rate)
        frame += 1
        delay = start + frame * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.3)
    gc.enable()
    gc.unfreeze()
    latencies = _latencies(listener, switches)
    for p in parts:
        p.close()
    return {"latency_ms": latencies, "listener_packets": listener.stats.packets, "sends": sends}


def _tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (32767 * 10 ** (-12 / 20) * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _latencies(listener, switches: list[float]) -> list[float]:
    """When did the listener hear each switch? 5 ms sub-blocks, Goertzel-style band energy."""
    rate = listener.rate
    sub = rate // 200  # 5 ms
    times, which = [], []
    for arrival, pcm in listener.received:
        for j in range(0, len(pcm) - sub + 1, sub):
            block = pcm[j:j + sub].astype(np.float64)
            e1 = _band(block, rate, F1)
            e2 = _band(block, rate, F2)
            if max(e1, e2) < 1e3:
                continue
            # the listener plays each packet as it arrives: sample j at arrival + j / rate.
            # (Direct from the talker, the switch would be heard at its send time + offset:
            # the difference is what the gateway adds.)
            times.append(arrival + j / rate)
            which.append(1 if e1 > e2 else 2)
    heard = [times[i] for i in range(1, len(which)) if which[i] != which[i - 1]]
    lat = []
    for s in switches:
        later = [h for h in heard if h >= s - 0.005]
        if later and later[0] - s < 0.5:
            lat.append((later[0] - s) * 1000)
    return lat


def _band(block: np.ndarray, rate: int, f: float) -> float:
    n = np.arange(len(block))
    c = np.cos(2 * np.pi * f * n / rate)
    s = np.sin(2 * np.pi * f * n / rate)
    return float((block @ c) ** 2 + (block @ s) ** 2) / len(block)


def trial(n: int, seconds: float) -> dict:
    # CAU_BENCH_SERVER: another script to run as the gateway side (e.g. one that instruments it)
    proc = subprocess.Popen(
        [sys.executable, os.environ.get("CAU_BENCH_SERVER", __file__), "--serve", str(n), "--seconds", str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        try:
            import uvloop
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        client = loop.run_until_complete(drive(n, seconds, proc))
        server = json.loads(proc.stdout.readline())
        proc.wait(timeout=30)
        # phase: how long after the timed talker's send the gateway's next tick fell (median)
        sends = client.pop("sends")
        client["phase_ms"] = float(np.median([((server["clock_origin"] - t) % 0.02) * 1000 for t in sends]))
    finally:
        if proc.poll() is None:
            proc.kill()
    return {**server, **client}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1, help="trials per size (each with its own random phase)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.seconds)
        return
    print(f"audio room benchmark: {args.seconds:g} s measured per trial after {WARMUP_S:g} s warm-up; "
          f"codec mix 40 % G.711, 30 % G.722, 30 % Opus; 3 talkers; {os.cpu_count()} cores")
    print("late ticks: all (and of those, how many had the CPU taken: by the hypervisor / other processes)")
    print("steal: CPU time the hypervisor gave to other guests, % of this machine, over the window")
    print(f"{'N':>5} {'CPU total':>10} {'CPU/part':>9} {'late ticks':>13} {'taken':>6} {'steal':>6} {'missed':>7} "
          f"{'tick p50':>9} {'tick p99':>9} {'phase':>6} {'lat p50':>8} {'lat p99':>8} {'mem/part':>9} {'jb lost':>8}")
    for n in [int(x) for x in args.sizes.split(",")]:
        for _ in range(args.repeat):
            r = trial(n, args.seconds)
            cpu = 100 * r["cpu_s"] / r["wall_s"]
            lat = np.array(r["latency_ms"]) if r["latency_ms"] else np.array([np.nan])
            late_pct = 100 * r["late_ticks"] / max(1, r["ticks"])
            taken = f"{r['late_steal']}/{r['late_runq']}"
            print(f"{n:>5} {cpu:>9.1f}% {cpu / n:>8.2f}% {r['late_ticks']:>5} ({late_pct:.2f}%) {taken:>6} "
                  f"{r['steal_pct']:>5.1f}% "
                  f"{r['missed_ticks']:>7} {r['tick_p50_us'] / 1000:>7.2f}ms {r['tick_p99_us'] / 1000:>7.2f}ms "
                  f"{r['phase_ms']:>4.1f}ms {np.percentile(lat, 50):>6.1f}ms {np.percentile(lat, 99):>6.1f}ms "
                  f"{r['rss_kib_per_leg']:>6.0f}KiB {r['jb_lost']:>8}", flush=True)


if __name__ == "__main__":
    main()
