"""Benchmark: what one more browser costs the gateway in a cp-2x2 720p30 room.

The gateway is ``cau run`` itself (a child process, loopback, its own dial plan with one cp-2x2
room). Four publishers (WHIP, aiortc) send pre-encoded 640x360 VP8 clips of their own colour, so
the room decodes four sources and composes and encodes one 1280x720 VP8 picture at 30 fps. Then
M receive-only viewers (WHEP, aiortc, in another process) take the room's picture: every viewer's
packets are counted, one of them ("the sample") also decodes them and its picture is checked for
the four colours. The viewers send no REMB, so all of them stay in the one 720p group.

Figures (nothing asserted): the gateway's CPU (from /proc, user+system) with the sample viewer
alone and with M more; the difference per further viewer, split into user and system time (on
loopback the system time of ``sendto`` includes the kernel delivering each packet to the
viewer's socket, work a real network does elsewhere); the viewers' packet and frame rates;
what a viewer received. The target in issue 11: at most 0.5 % of a core per browser receiver.

Usage: python bench/webrtc_room.py [--viewers 25,50] [--seconds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30)]
CLIP = 60
PLAN = """version: 1
rooms:
  - id: bench
    name: "Bench cp-2x2"
    numbers: ["7000"]
    layout: cp-2x2
    max_participants: 500
"""


def clip(rgb: tuple[int, int, int]) -> list[bytes]:
    """60 frames of 640x360 VP8 (a colour with a moving square), the first a keyframe."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 640, 360, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.bit_rate = 800_000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out = []
    for i in range(CLIP):
        img = np.empty((360, 640, 3), np.uint8)
        img[:] = rgb
        x = (i * 9) % 600
        img[300:340, x:x + 40] = 255
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i
        f.pict_type = av.video.frame.PictureType.I if i == 0 else av.video.frame.PictureType.NONE
        out += [bytes(p) for p in enc.encode(f)]
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def start_gateway(tmp: Path) -> tuple[subprocess.Popen, int]:
    (tmp / "plan.yaml").write_text(PLAN)
    (tmp / "cau.yaml").write_text(f"state_dir: {tmp / 'state'}\nice_hosts: 127.0.0.1\n")
    out = tmp / "cau.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(tmp / "cau.yaml"), "--bind", "127.0.0.1",
         "--sip-port", "0", "--h323-port", "0", "--ras-port", "0", "--http-port", "0", "--https-port", "0", "--sip-tls-port", "0",
         "--rtp-ports", "41000-41999", "--dialplan", str(tmp / "plan.yaml"), "--no-watch"],
        stdout=out.open("w"), stderr=(tmp / "cau.log").open("w"), start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"HTTPS listening on [\d.]+:(\d+)", out.read_text())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            raise SystemExit("cau run exited: " + (tmp / "cau.log").read_text()[-2000:])
        time.sleep(0.1)
    raise SystemExit("cau run did not start")


# -- the clients' process ------------------------------------------------------------------------
def clients(https: int, viewers: int, seconds: float, report: Path) -> None:
    """Publishers and viewers (run as ``--clients``): waits for 'go' lines on stdin between phases."""
    from aiortc.mediastreams import MediaStreamTrack

    from gateway import loop as _loop
    from gateway.webrtc import hooks
    from interop_tests.peers.webrtc_client import WebRtcClient

    loop = _loop.install(use_uvloop=False)
    hooks.set_host_addresses(["127.0.0.1"])
    url = f"https://127.0.0.1:{https}"

    class ClipTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, frames: list[bytes]) -> None:
            super().__init__()
            self.frames, self.n, self.t0 = frames, 0, None

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.monotonic()
            delay = self.t0 + self.n / 30 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            p = av.Packet(self.frames[self.n % len(self.frames)])
            p.pts, p.time_base = self.n * 3000, fractions.Fraction(1, 90000)
            self.n += 1
            return p

    async def publisher(rgb) -> WebRtcClient:
        c = WebRtcClient(tone=None, colour=rgb, receive=False, video_codec="VP8")
        c.video_tx.sender.replaceTrack(ClipTrack(clip(rgb)))
        await c.publish(f"{url}/whip/7000")
        await c.wait_connected(15)
        return c

    async def viewer(decode: bool) -> tuple[WebRtcClient, list[int]]:
        c = WebRtcClient(send=False)
        counted = [0]
        await c.publish(f"{url}/whep/7000")
        for t in c.pc.getTransceivers():
            t.receiver._RTCRtpReceiver__remote_bitrate_estimator = None   # no REMB: stay in the 720p group
            if not decode:
                hooks.tap_receiver(t.receiver, lambda p, n=counted: n.__setitem__(0, n[0] + 1))
        await c.wait_connected(20)
        return c, counted

    async def main() -> None:
        pubs = [await publisher(rgb) for rgb in COLOURS]
        sample, _ = await viewer(True)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        many = []
        for i in range(viewers):
            many.append(await viewer(False))
        await asyncio.sleep(3)
        before = [n[0] for _, n in many]
        f0 = sample.received.frames
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.sleep(seconds)
        pkts = [n[0] - b for (_, n), b in zip(many, before)]
        frames = sample.received.frames - f0
        pic = sample.received.picture
        from interop_tests.peers.baresip_video import cell_colour

        cells = [cell_colour(pic, c).round().tolist() for c in
                 [(0, 0, .5, .5), (.5, 0, .5, .5), (0, .5, .5, .5), (.5, .5, .5, .5)]] if pic is not None else None
        report.write_text(repr({"viewer_pkts_per_s": (min(pkts) / seconds if pkts else 0,
                                                      sum(pkts) / max(1, len(pkts)) / seconds),
                                "sample_fps": frames / seconds, "sample_size": sample.received.size,
                                "cells": cells}))
        print("done", flush=True)
        for c in [*pubs, sample, *(c for c, _ in many)]:
            await c.close()

    try:
        loop.run_until_complete(main())
    finally:
        sys.stdout.flush()
        os._exit(0)     # aiortc's receiver threads would keep the process alive


def measure(gw: subprocess.Popen, seconds: float) -> tuple[float, float]:
    """The gateway's (user, system) share of a core over ``seconds``."""
    u0, s0 = cpu_seconds(gw.pid)
    t = time.monotonic()
    time.sleep(seconds)
    u1, s1 = cpu_seconds(gw.pid)
    dt = time.monotonic() - t
    return (u1 - u0) / dt, (s1 - s0) / dt


def trial(m: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cau-bench-webrtc-") as d:
        tmp = Path(d)
        gw, https = start_gateway(tmp)
        report = tmp / "report.txt"
        cl = subprocess.Popen([sys.executable, __file__, "--clients", str(https), "--viewers", str(m),
                               "--seconds", str(seconds), "--report", str(report)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert cl.stdout.readline().strip() == "ready"
            time.sleep(3)
            base = measure(gw, seconds)
            cl.stdin.write("go\n")
            cl.stdin.flush()
            assert cl.stdout.readline().strip() == "ready"
            cl.stdin.write("go\n")
            cl.stdin.flush()
            loaded = measure(gw, seconds)
            assert cl.stdout.readline().strip() == "done"
            got = eval(report.read_text())   # written by our own child, above
        finally:
            cl.kill()
            os.killpg(gw.pid, signal.SIGTERM)
            gw.wait(10)
        return {"viewers": m, "base": base, "loaded": loaded, **got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", default="25,50")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.clients:
        clients(a.clients, int(a.viewers), a.seconds, a.report)
        return
    print(f"cp-2x2 room, 4 VP8 640x360 publishers, the room's picture VP8 1280x720@30 to every viewer; "
          f"{a.seconds:g} s per measurement, {os.cpu_count()} cores")
    for m in (int(x) for x in a.viewers.split(",")):
        r = trial(m, a.seconds)
        (bu, bs), (lu, ls) = r["base"], r["loaded"]
        r["base"], r["loaded"] = bu + bs, lu + ls
        per = (r["loaded"] - r["base"]) / m
        per_user, per_sys = (lu - bu) / m, (ls - bs) / m
        lo, mean = r["viewer_pkts_per_s"]
        print(f"{m:4d} more viewers: gateway {100 * r['base']:5.1f} % of a core with the sample viewer, "
              f"{100 * r['loaded']:5.1f} % with {m} more -> {100 * per:.2f} % of a core per viewer "
              f"(user {100 * per_user:.2f} + system {100 * per_sys:.2f}; ratio to the 0.5 % goal {per / 0.005:.2f}); "
              f"viewers {mean:.0f} packets/s (lowest {lo:.0f}); sample {r['sample_fps']:.1f} fps "
              f"{r['sample_size'][0]}x{r['sample_size'][1]}, cells {r['cells']}")


if __name__ == "__main__":
    main()
