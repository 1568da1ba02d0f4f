"""Benchmark: SIP call handling of a running Cầu (`cau run`), driven by sipp over real UDP on loopback.

The gateway is the real thing: ``python -m gateway run`` in its own process group,
on ephemeral SIP/HTTP/RAS ports, with a dial plan written here (one room, "1000",
``max_participants: 2000``). sipp 3.6 (``sip-tester``) is the independent caller.

Two phases; figures are printed, nothing is asserted:

1. **Call setup rate.** For each rate R: sipp's built-in ``uac`` places R x ``--seconds``
   calls at R calls/s, each held 1 s (``-d 1000``), then BYE. Printed: successful and
   failed calls, sipp retransmissions, response time INVITE→200 p50/p95/max (from
   ``-trace_rtt -rtt_freq 1``: every call's time, in sipp's clock steps: 4 ms here), the
   gateway's CPU (% of one core, /proc/PID/stat utime+stime) average and worst 1 s over
   the run, and media-clock late ticks. Headline: the highest rate with zero failures.
2. **Concurrent calls held.** For each N: sipp places N calls at ``--ramp-rate`` calls/s,
   each held long enough that all N are up together for ``--hold`` seconds
   (``-d`` = ramp time + hold). Printed: the most participants the room held at once
   (/api/status), failed calls, gateway CPU and RSS while all were held, and whether
   everything ended cleanly: 0 participants and ``rtp_ports_in_use`` 0 afterwards.
   Media: the built-in ``uac`` sends no RTP (the gateway still mixes and sends every
   leg 50 packets/s); ``--media audio`` uses ``interop_tests/peers/scenarios/uac_audio.xml``,
   which streams a PCMU tone per call (the mixer decodes every leg). Default: both, in turn.

The gateway's log (stderr) is kept; WARNING/ERROR lines are counted per phase and the
distinct ones shown at the end, with the path of the whole log.

Usage: python bench/sip_calls.py [--rates 10,25,50,100] [--seconds 10] [--sizes 50,100,200,400]
                                 [--hold 10] [--ramp-rate 50] [--media none,audio] [--keep]
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._gateway import CLK_TCK, BenchCau, cpu_ticks, pct, problems, rss_mib, shape  # noqa: E402
from interop_tests.peers.procs import LOOPBACK, PeerProcess, free_port, require_binary  # noqa: E402
from interop_tests.peers.sipp import TONE_FILE, scenario_path, write_tone  # noqa: E402

ROOM = "1000"
DIALPLAN = """\
# written by bench/sip_calls.py
version: 1
defaults:
  max_participants: 2000
  layout: voice-switched
  audio:
    codecs: [PCMU, PCMA, G722, opus, telephone-event]
rooms:
  - id: bench
    name: "SIP call benchmark room"
    numbers: ["1000"]
    max_participants: 2000
"""


# ------------------------------------------------------------------ /proc sampling
class CpuSampler:
    """Samples a process's CPU every ``period`` s in a thread: average and worst interval."""

    def __init__(self, pid: int, period: float = 1.0):
        self.pid, self.period = pid, period
        self.samples: list[float] = []  # % of one core per interval
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._c0 = cpu_ticks(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_t, last_c = self._t0, self._c0
        while not self._stop.wait(self.period):
            try:
                c = cpu_ticks(self.pid)
            except OSError:
                return
            t = time.monotonic()
            self.samples.append(100 * (c - last_c) / CLK_TCK / (t - last_t))
            last_t, last_c = t, c

    def stop(self) -> tuple[float, float]:
        """(average %, worst 1 s %) since start."""
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._t0
        try:
            avg = 100 * (cpu_ticks(self.pid) - self._c0) / CLK_TCK / wall
        except OSError:
            avg = float("nan")
        return avg, max(self.samples, default=avg)


# ------------------------------------------------------------------ the gateway
class Cau(BenchCau):
    def __init__(self, workdir: Path):
        super().__init__(workdir, DIALPLAN, "bench", needs=("sip",))
        self.workdir = workdir
        self.sip_port = self.ports["sip"]

    def wait_idle(self, timeout: float) -> tuple[int, int, float]:
        """Wait for 0 participants and 0 RTP ports in use: (participants, ports, seconds waited)."""
        t0 = time.monotonic()
        while True:
            n, ports, _ = self.snapshot()
            if (n == 0 and ports == 0) or time.monotonic() - t0 > timeout:
                return n, ports, time.monotonic() - t0
            time.sleep(0.25)


# ------------------------------------------------------------------ sipp
class SippRun:
    """One background sipp uac run against the gateway, in its own directory."""

    def __init__(self, workdir: Path, name: str, target: str, *, scenario: str, calls: int, rate: float,
                 hold_ms: int, limit: int, timeout: float):
        self.dir = workdir / name
        self.dir.mkdir()
        write_tone(self.dir / TONE_FILE)
        scen = ["-sn", "uac"] if scenario == "builtin:uac" else ["-sf", str(scenario_path(scenario).resolve())]
        self.argv = [require_binary("sipp"), target, *scen, "-i", LOOPBACK, "-p", str(free_port()),
                     "-mi", LOOPBACK, "-mp", str(free_port()), "-nostdin",
                     "-s", ROOM, "-m", str(calls), "-r", str(rate), "-d", str(hold_ms), "-l", str(limit),
                     "-trace_err", "-error_file", str(self.dir / "errors.log"),
                     "-trace_stat", "-stf", str(self.dir / "stats.csv"),
                     "-trace_rtt", "-rtt_freq", "1",
                     "-timeout", f"{int(timeout)}s", "-timeout_error"]
        self.timeout = timeout
        self.proc = PeerProcess(self.argv, cwd=self.dir, name=name, log_path=self.dir / "stdout.log")

    def wait(self) -> int:
        try:
            return self.proc.wait(self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.proc.stop()
            return -1

    def stop(self) -> None:
        self.proc.stop(grace=2)

    def stats(self) -> dict[str, str]:
        p = self.dir / "stats.csv"
        if not p.exists():
            return {}
        rows = list(csv.reader(p.read_text(errors="replace").splitlines(), delimiter=";"))
        return dict(zip(rows[0], rows[-1])) if len(rows) >= 2 else {}

    def response_times_ms(self) -> list[float]:
        out: list[float] = []
        for f in glob.glob(str(self.dir / "*_rtt.csv")):
            for row in csv.reader(Path(f).read_text(errors="replace").splitlines()[1:], delimiter=";"):
                try:
                    out.append(float(row[1]))
                except (IndexError, ValueError):
                    pass
        return out

    def error_lines(self) -> list[str]:
        p = self.dir / "errors.log"
        return p.read_text(errors="replace").splitlines() if p.exists() else []


def num(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


def failure_kinds(stats: dict[str, str]) -> str:
    kinds = {k[6:-3]: num(stats, k) for k in stats if k.startswith("Failed") and k.endswith("(C)")
             and k != "FailedCall(C)"}
    return ", ".join(f"{k} {v}" for k, v in kinds.items() if v) or "-"


# ------------------------------------------------------------------ phases
def setup_rate(cau: Cau, work: Path, rate: int, seconds: float, notes: list[str]) -> dict:
    calls = int(rate * seconds)
    log0 = cau.log_size()
    late0 = cau.snapshot()[2]
    run = SippRun(work, f"rate-{rate}", f"{LOOPBACK}:{cau.sip_port}", scenario="builtin:uac", calls=calls,
                  rate=rate, hold_ms=1000, limit=max(50, rate * 10), timeout=seconds + 40)
    sampler = CpuSampler(cau.pid)
    t0 = time.monotonic()
    rc = run.wait()
    wall = time.monotonic() - t0
    cpu_avg, cpu_max = sampler.stop()
    st = run.stats()
    rt = run.response_times_ms()
    left, ports, waited = cau.wait_idle(15)
    late = cau.snapshot()[2] - late0
    probs = problems(cau.log_since(log0))
    r = {"rss_after": rss_mib(cau.pid), "rate": rate, "calls": calls, "rc": rc, "ok": num(st, "SuccessfulCall(C)"), "failed": num(st, "FailedCall(C)"),
         "retrans": num(st, "Retransmissions(C)"), "rt": rt, "cpu": cpu_avg, "cpu_max": cpu_max, "wall": wall,
         "late": late, "left": left, "ports": ports, "log_problems": len(probs), "why": failure_kinds(st)}
    if r["failed"] or rc != 0 or probs or r["retrans"] or left or ports:
        notes.append(f"rate {rate}/s: sipp exit {rc}, failed {r['failed']} ({r['why']}), retrans {r['retrans']}, "
                     f"gateway log problems {len(probs)}, after: {left} participants / {ports} ports; "
                     f"sipp dir {run.dir}")
        notes += [f"    sipp: {ln}" for ln in run.error_lines()[:4]]
    return r


def concurrent(cau: Cau, work: Path, n: int, ramp_rate: float, hold: float, audio: bool,
               notes: list[str]) -> dict:
    ramp = n / ramp_rate
    hold_ms = int((ramp + hold) * 1000)
    log0 = cau.log_size()
    rss0 = rss_mib(cau.pid)
    late0 = cau.snapshot()[2]
    run = SippRun(work, f"held-{n}{'-audio' if audio else ''}", f"{LOOPBACK}:{cau.sip_port}",
                  scenario="uac_audio" if audio else "builtin:uac", calls=n, rate=ramp_rate,
                  hold_ms=hold_ms, limit=n + 10, timeout=ramp + hold + 60)
    sipp_pid = run.proc.pid
    t0 = time.monotonic()
    peak = 0
    # wait until all N are in the room (or the last call should long be up)
    while time.monotonic() - t0 < ramp + hold / 2 and run.proc.alive():
        peak = max(peak, cau.snapshot()[0])
        if peak >= n:
            break
        time.sleep(0.2)
    all_up = time.monotonic() - t0
    # measure while held: until 1.5 s before the first call is due to end
    window = max(1.0, ramp + hold - 1.5 - all_up)
    sampler = CpuSampler(cau.pid, period=1.0)
    sipp_c0 = cpu_ticks(sipp_pid) if run.proc.alive() else 0
    rss_max = 0.0
    end = time.monotonic() + window
    while time.monotonic() < end:
        rss_max = max(rss_max, rss_mib(cau.pid))
        peak = max(peak, cau.snapshot()[0])
        time.sleep(0.5)
    cpu_avg, cpu_max = sampler.stop()
    try:
        sipp_cpu = 100 * (cpu_ticks(sipp_pid) - sipp_c0) / CLK_TCK / window
    except OSError:
        sipp_cpu = float("nan")
    late = cau.snapshot()[2] - late0
    rc = run.wait()
    st = run.stats()
    left, ports, waited = cau.wait_idle(20)
    probs = problems(cau.log_since(log0))
    r = {"n": n, "audio": audio, "rc": rc, "ok": num(st, "SuccessfulCall(C)"), "failed": num(st, "FailedCall(C)"),
         "retrans": num(st, "Retransmissions(C)"), "peak": peak, "all_up_s": all_up, "window": window,
         "cpu": cpu_avg, "cpu_max": cpu_max, "sipp_cpu": sipp_cpu, "rss0": rss0, "rss": rss_max, "late": late,
         "left": left, "ports": ports, "idle_after_s": waited, "log_problems": len(probs),
         "why": failure_kinds(st), "rt": run.response_times_ms()}
    if r["failed"] or rc != 0 or probs or r["retrans"] or left or ports or peak < n:
        notes.append(f"held {n}{' +audio' if audio else ''}: sipp exit {rc}, failed {r['failed']} ({r['why']}), "
                     f"retrans {r['retrans']}, peak {peak}/{n}, gateway log problems {len(probs)}, after: {left} "
                     f"participants / {ports} ports; sipp dir {run.dir}")
        notes += [f"    sipp: {ln}" for ln in run.error_lines()[:4]]
    return r


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="10,25,50,100", help="call setup rates, calls/s")
    ap.add_argument("--seconds", type=float, default=10, help="seconds of calls per rate (R x this calls)")
    ap.add_argument("--sizes", default="50,100,200,400", help="concurrent call counts")
    ap.add_argument("--hold", type=float, default=10, help="seconds all N calls are up together")
    ap.add_argument("--ramp-rate", type=float, default=50, help="calls/s while building up the N calls")
    ap.add_argument("--media", default="none,audio",
                    help="phase 2 callers: none (built-in uac, no RTP) and/or audio (uac_audio.xml, PCMU tone)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) even when all is clean")
    args = ap.parse_args()
    rates = [int(x) for x in args.rates.split(",") if x]
    sizes = [int(x) for x in args.sizes.split(",") if x]
    medias = [m.strip() for m in args.media.split(",") if m.strip()]
    if not set(medias) <= {"none", "audio"}:
        ap.error("--media takes none and/or audio")

    work = Path(tempfile.mkdtemp(prefix="cau-bench-sip-"))
    cau: Cau | None = None
    runs: list[SippRun] = []

    def on_term(signum, frame):  # SIGTERM: same clean-up as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    orig_init = SippRun.__init__

    def tracked_init(self, *a, **kw):
        orig_init(self, *a, **kw)
        runs.append(self)

    SippRun.__init__ = tracked_init  # type: ignore[method-assign]
    notes: list[str] = []
    clean = False
    try:
        la = os.getloadavg()
        print(f"SIP call benchmark: cau run vs sipp {subprocess.run(['sipp', '-v'], capture_output=True, text=True).stdout.split()[1]}"
              f" on loopback UDP; {os.cpu_count()} cores; load average at start "
              f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f}", flush=True)
        cau = Cau(work)
        print(f"gateway pid {cau.pid}: SIP {LOOPBACK}:{cau.sip_port}, HTTP {cau.http_port}; "
              f"RSS at start {rss_mib(cau.pid):.0f} MiB; work dir {work}", flush=True)

        print(f"\n1. call setup rate: built-in uac, {args.seconds:g} s of calls per rate, each held 1 s; "
              f"response time = INVITE sent -> 200 received (sipp's rtt trace; its clock ticks in 4 ms steps here)")
        print(f"{'rate/s':>6} {'calls':>6} {'ok':>6} {'failed':>6} {'retrans':>7} {'rt p50':>7} {'rt p95':>7} "
              f"{'rt max':>7} {'CPU avg':>8} {'CPU max1s':>9} {'late ticks':>10} {'after':>9} {'RSS after':>9}", flush=True)
        rate_results = []
        for rate in rates:
            r = setup_rate(cau, work, rate, args.seconds, notes)
            rate_results.append(r)
            print(f"{rate:>6} {r['calls']:>6} {r['ok']:>6} {r['failed']:>6} {r['retrans']:>7} "
                  f"{pct(r['rt'], 50):>5.0f}ms {pct(r['rt'], 95):>5.0f}ms {max(r['rt'], default=float('nan')):>5.0f}ms "
                  f"{r['cpu']:>7.1f}% {r['cpu_max']:>8.1f}% {r['late']:>10} {r['left']:>3}p/{r['ports']}rtp {r['rss_after']:>6.0f}MiB", flush=True)
        good = [r["rate"] for r in rate_results if r["failed"] == 0 and r["rc"] == 0 and r["ok"] == r["calls"]]
        print(f"highest rate with zero failures: {max(good) if good else 'none'} calls/s "
              f"(of {', '.join(map(str, rates))})", flush=True)

        print(f"\n2. concurrent calls held: ramp {args.ramp_rate:g} calls/s, all N up together for "
              f"{args.hold:g} s; media none = built-in uac, no RTP from the callers; audio = uac_audio.xml, "
              f"every call streams a 1 kHz PCMU tone (the mixer decodes all of them)")
        print(f"{'media':>5} {'N':>5} {'ok':>5} {'failed':>6} {'retrans':>7} {'peak held':>9} {'rt p95':>7} {'CPU avg':>8} "
              f"{'CPU max1s':>9} {'sipp CPU':>8} {'RSS before':>10} {'RSS held':>8} {'late ticks':>10} {'after':>10}",
              flush=True)
        held_results = []
        for audio, n in [(m == "audio", n) for m in medias for n in sizes]:
            r = concurrent(cau, work, n, args.ramp_rate, args.hold, audio, notes)
            held_results.append(r)
            print(f"{'audio' if audio else 'none':>5} {n:>5} {r['ok']:>5} {r['failed']:>6} {r['retrans']:>7} {r['peak']:>9} "
                  f"{pct(r['rt'], 95):>5.0f}ms {r['cpu']:>7.1f}% {r['cpu_max']:>8.1f}% {r['sipp_cpu']:>7.1f}% "
                  f"{r['rss0']:>7.0f}MiB {r['rss']:>5.0f}MiB {r['late']:>10} "
                  f"{r['left']:>3}p/{r['ports']}rtp", flush=True)
        for m in medias:
            clean_held = [r["n"] for r in held_results if r["audio"] == (m == "audio")
                          and r["failed"] == 0 and r["peak"] >= r["n"] and r["rc"] == 0]
            print(f"most calls held together without a failure, media {m}: "
                  f"{max(clean_held) if clean_held else 'none'} (of {', '.join(map(str, sizes))})")
        print(f"ended cleanly (0 participants, 0 RTP ports): "
              f"{'yes' if all(r['left'] == 0 and r['ports'] == 0 for r in held_results) else 'NO'}", flush=True)

        probs = problems(cau.log_since(0))
        print(f"\ngateway log: {len(cau.log_since(0))} lines, {len(probs)} WARNING/ERROR ({cau.log_path})")
        groups: dict[str, list[str]] = {}
        for ln in probs:
            groups.setdefault(shape(ln), []).append(ln)
        for lines in sorted(groups.values(), key=len, reverse=True)[:8]:
            print(f"  x{len(lines):<5} {lines[0][:220]}")
        if notes:
            print("notes:")
            for n_ in notes:
                print(f"  {n_}")
        clean = not notes and not probs
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping sipp and the gateway", file=sys.stderr)
        return 130
    finally:
        for run in runs:
            run.stop()
        if cau is not None:
            cau.stop()
        if clean and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
