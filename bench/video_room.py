"""Benchmark: one video room of a whole province, real RTP on loopback.

Every site sends video (a moving picture of its own colour with its frame number drawn into it
as a bar code) and receives the room's picture; the sites' codecs are mixed as a province's are
(H.264 mode 1 and mode 0, VP8, H.263 CIF by RFC 2190, H.263+ CIF) and so are their links (b=AS
caps that put them in the 2048 / 1024 / 512 / 256 kbit/s tiers). The gateway side (a child
process, ``--serve``) is the media plane as the adapters use it: RtpMedia legs, one Room, its
VideoMixer with the encoder groups, the 30/s video clock, Twisted on uvloop. Audio legs exist
(a Leg is made with its audio) but carry nothing: the audio room has its own benchmark.

The sites (this process) replay pre-encoded clips (60 frames per sender, its own colour; on a
keyframe request, RTCP PLI, a sender starts its clip again from the keyframe). One receiver per
encoder group decodes what it gets and reads the bar codes in the tiles to time every frame
from the moment its sender sent it (added latency through the bridge); the other receivers'
sockets are left unread, as the kernel drops what nobody reads (their endpoints' work is
theirs, not the gateway's).

Figures (nothing asserted): the gateway's CPU in total, per site and, between two room sizes,
per further site; late video ticks (the room's job still running when the next frame was due:
that frame is skipped); frames dropped at the depacketizers; encoder groups and decoders
running; job time p50/p95; frame latency p50/p95; the CPU of the event loop and of the codec
threads. (That a keyframe request is answered on the next frame, and storms coalesced, is
asserted in tests/test_video_room.py.)

With ``--ffmpeg`` the same media work — decode the four on-screen senders, scale, compose the
2x2 picture at each group's size, encode each group with the same settings, one thread per
codec — runs as one ffmpeg process on the same inputs for the same time, and our CPU is
printed as a ratio to it (needs Debian's ``ffmpeg``).

Usage: python bench/video_room.py [--sizes 21,221] [--seconds 10] [--layout cp-2x2] [--ffmpeg]
"""
from __future__ import annotations

import argparse
import asyncio
import colorsys
import gc
import json
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FPS = 30
CLIP = 60                      # frames per sender clip (2 s)
WARMUP_S = 4.0
BITS = 6                       # frame number bits drawn into the picture (CLIP < 64)
#: (codec, packetization mode, b=AS cap kbit/s): the sites' mix, repeated
SITES = ([("H264", 1, 2048)] * 1 + [("H264", 1, 1024)] * 3 + [("H264", 0, 512)] * 2 + [("VP8", 0, 1024)] * 1
         + [("H264", 1, 512)] * 3 + [("H263", 0, 512)] * 2 + [("H263-1998", 0, 256)] * 1 + [("VP8", 0, 512)] * 1)
PT = {"H264": 96, "VP8": 97, "H263": 34, "H263-1998": 98}
SEND_SIZE = {"H264": (320, 240), "VP8": (320, 240), "H263": (352, 288), "H263-1998": (352, 288)}
SEND_KBPS = 256


def site_plan(n: int) -> list[tuple[str, int, int]]:
    return [SITES[i % len(SITES)] for i in range(n)]


def fmt_for(codec: str, mode: int, cap_kbps: int | None):
    from gateway.catalogue import default_catalogue
    from gateway.media.codecs import MediaFormat, h263, h264, vp8

    cat = default_catalogue()
    c = cat.get(codec)
    if codec == "H264":
        params = h264.from_fmtp(c, {"profile-level-id": "42e01f", "packetization-mode": str(mode)})
    elif codec == "VP8":
        params = vp8.from_fmtp(c, {})
    else:
        params = h263.from_fmtp(c, {"CIF": "1", "QCIF": "1"})
    return MediaFormat(c, PT[codec], params, bitrate_cap=cap_kbps * 1000 if cap_kbps else None)


def colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i * 0.137) % 1.0, 0.8, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def picture(i: int, frame: int, size: tuple[int, int]) -> np.ndarray:
    """Sender i's frame: its colour, a moving white square, the frame number as a bar code in the
    bottom quarter (a white start block, BITS bits, a black end block)."""
    w, h = size
    pic = np.empty((h, w, 3), np.uint8)
    pic[:] = colour(i)
    side = h // 10
    x = (frame * 6) % (w - side)
    pic[h // 20:h // 20 + side, x:x + side] = 255
    blocks = [1] + [(frame >> b) & 1 for b in reversed(range(BITS))] + [0]
    bw = w // len(blocks)
    for k, bit in enumerate(blocks):
        pic[h * 3 // 4:, k * bw:(k + 1) * bw] = 235 if bit else 16
    return pic


def read_code(tile: np.ndarray) -> int | None:
    """The frame number in a decoded tile (RGB, the sender's picture scaled), or None."""
    h, w, _ = tile.shape
    band = tile[h * 3 // 4 + h // 16:h - h // 16].mean(axis=2)
    n = BITS + 2
    vals = [band[:, int((k + 0.3) * w / n):int((k + 0.7) * w / n)].mean() for k in range(n)]
    if not (vals[0] > 160 and vals[-1] < 60):
        return None
    bits = [v > 125 for v in vals[1:-1]]
    if any(60 < v < 160 for v in vals[1:-1]):
        return None
    return sum(b << (BITS - 1 - k) for k, b in enumerate(bits))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def thread_cpu() -> dict[str, float]:
    """CPU seconds of the event loop's thread and of the codec worker threads, from /proc."""
    out = {"loop": 0.0, "codec threads": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "loop" if int(task.name) == os.getpid() else "codec threads"
        out[key] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------- gateway side
def serve(n: int, seconds: float, layout: str) -> None:
    from gateway import loop as _loop

    _loop.install()
    from types import SimpleNamespace

    from twisted.internet import reactor

    from gateway.catalogue import default_catalogue
    from gateway.conference.plane import media_plane
    from gateway.conference.rtp_media import RtpMedia, StreamPlan
    from gateway.media.codecs import MediaFormat

    pcmu = MediaFormat(default_catalogue().get("PCMU"), 0, ptime_ms=20)
    remotes = json.loads(sys.stdin.readline())["ports"]
    base = random.randrange(20000, 40000, 2)
    plane = media_plane((base, base + 4 * n + 100), grace_period=60)
    spec = SimpleNamespace(id="tinh", name="Province", max_participants=None, layout=layout,
                           max_resolution=None, pin=None)
    rss0 = rss_kib()
    medias = []
    for i, (codec, mode, cap) in enumerate(site_plan(n)):
        m = RtpMedia(plane.ports, bind="127.0.0.1", rtp_timeout=0, display_name=f"site {i}", protocol="bench")
        m.open("audio")
        m.open("video")
        rx = fmt_for(codec, mode, None)
        tx = fmt_for(codec, mode, cap)
        m.apply("video", StreamPlan("video", rx, tx, remote=("127.0.0.1", remotes[i]),
                                    feedback=frozenset({"nack pli"})))
        m.apply("audio", StreamPlan("audio", pcmu, pcmu, remote=("127.0.0.1", 9)))
        plane.registry.join(spec, m.leg)
        medias.append(m)
    room = plane.registry.get("tinh")
    for m in medias:                # video only: the audio room has its own benchmark
        room.mixer.remove(m.leg.id)
    print(json.dumps({"ports": [m.local_port("video") for m in medias]}), flush=True)
    plane.start()
    result: dict = {}
    vas_turn = [0]

    def switch_speaker() -> None:   # voice switching without audio: the bench names the speaker
        vas_turn[0] += 1
        room.video.set_dominant(medias[vas_turn[0] % min(4, n)].leg.id)
        reactor.callLater(2.0, switch_speaker)

    if layout == "voice-switched":
        switch_speaker()

    def begin() -> None:
        st = room.video.stats
        result.update(cpu0=_cpu(), threads0=thread_cpu(), t0=time.monotonic(), ticks0=st.ticks, late0=st.late_ticks,
                      enc0=st.frames_encoded, rss=rss_kib(),
                      drop0=sum(mm.leg.video.source.frames_dropped for mm in medias))
        st.job_ms.clear()

    def end() -> None:
        st = room.video.stats
        cpu = _cpu() - result["cpu0"]
        wall = time.monotonic() - result["t0"]
        ms = sorted(st.job_ms)
        groups = [{"name": g.name, "receivers": len(g.members), "keyframes": g.keyframes,
                   "settings": [g.settings.codec, g.settings.width, g.settings.height, g.settings.fps,
                                g.settings.kbps, g.settings.mtu]}
                  for g in room.video.groups.values()]
        threads = {k: v - result["threads0"].get(k, 0.0) for k, v in thread_cpu().items()}
        print(json.dumps({
            "n": n, "wall_s": wall, "cpu_s": cpu, "threads": threads, "ticks": st.ticks - result["ticks0"],
            "late_ticks": st.late_ticks - result["late0"], "frames_encoded": st.frames_encoded - result["enc0"],
            "job_p50_ms": ms[len(ms) // 2] if ms else None, "job_p95_ms": ms[int(len(ms) * 0.95)] if ms else None,
            "groups": groups,
            "decoders": sum(1 for mm in medias if mm.leg.video.source.on_screen),
            "dropped": sum(mm.leg.video.source.frames_dropped for mm in medias) - result["drop0"],
            "rss_kib_per_site": (result["rss"] - rss0) / n,
            "receivers": {f"{g.settings.codec} {g.settings.width}x{g.settings.height} {g.settings.kbps}k":
                          medias.index(next(mm for mm in medias if mm.leg.video.sink in g.members))
                          for g in room.video.groups.values()},
        }), flush=True)
        reactor.stop()

    reactor.callLater(WARMUP_S, begin)
    reactor.callLater(WARMUP_S + seconds, end)
    reactor.run()


# ------------------------------------------------------------------------ sites side
class Clip:
    """A sender's pre-encoded, pre-packetized frames: (rtp payloads with marker, keyframe) each."""

    def __init__(self, i: int, codec: str, mode: int) -> None:
        from gateway.media.payload.h263 import parse_mb_info
        from gateway.media.video_codecs import EncoderSettings, VideoEncoder
        from gateway.media.video_stream import packetizer_for

        size = SEND_SIZE[codec]
        enc = VideoEncoder(EncoderSettings(codec, size[0], size[1], FPS, SEND_KBPS))
        pk = packetizer_for((codec, mode), 1200)
        self.frames: list[tuple[list[tuple[bytes, bool]], bool]] = []
        self.raw: list[bytes] = []             # the bitstream, for the ffmpeg comparison
        for f in range(CLIP):
            for ef in enc.encode(picture(i, f, size), f * 3000, keyframe=f == 0):
                self.raw.append(ef.data)
                packets = pk.packetize(ef.data, parse_mb_info(ef.mb_info)) if codec == "H263" else pk.packetize(ef.data)
                self.frames.append((packets, ef.keyframe))


class Site(asyncio.DatagramProtocol):
    def __init__(self, i: int, codec: str, mode: int, clip: Clip) -> None:
        self.i, self.codec, self.mode, self.clip = i, codec, mode, clip
        self.pt = PT[codec]
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.pos = 0
        self.sent_at_log: dict[int, list[float]] = {}   # clip frame → when it was sent (on-screen four)
        self.remote: tuple[str, int] | None = None
        self.transport = None
        self.rtcp = None
        self.plis = 0
        self.last_pli = 0.0
        self.decoding = False
        self.received: list[tuple[float, bytes]] = []

    def send_frame(self, now: float) -> None:
        packets, _ = self.clip.frames[self.pos]
        ts = self.ts
        for payload, marker in packets:
            hdr = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | self.pt, self.seq, ts, self.ssrc)
            self.transport.sendto(hdr + payload, self.remote)
            self.seq = (self.seq + 1) & 0xFFFF
        self.pos = (self.pos + 1) % len(self.clip.frames)
        self.ts = (self.ts + 90000 // FPS) & 0xFFFFFFFF

    def datagram_received(self, data: bytes, addr) -> None:
        if self.decoding:
            self.received.append((time.monotonic(), data))

    def pli(self) -> None:      # from the RTCP socket: start again from the keyframe
        self.plis += 1
        self.pos = 0
        self.last_pli = time.monotonic()


class Rtcp(asyncio.DatagramProtocol):
    def __init__(self, site: Site) -> None:
        self.site = site

    def datagram_received(self, data: bytes, addr) -> None:
        i = 0
        while i + 4 <= len(data):
            pt, length = data[i + 1], struct.unpack("!H", data[i + 2:i + 4])[0]
            if pt == 206 and data[i] & 0x1F in (1, 4):     # PSFB PLI / FIR
                self.site.pli()
            i += (length + 1) * 4


def latencies(site: Site, senders: list[Site], n_cells: int) -> tuple[list[float], int]:
    """Decode what ``site`` received and time each tile's frame number against its sender's send."""
    from gateway.media.layout import cells as layout_cells
    from gateway.media.video_codecs import DecodeError, VideoDecoder
    from gateway.media.video_stream import depacketizer_for

    fmt = fmt_for(site.codec, site.mode, None)
    dp = depacketizer_for(fmt)
    dec = VideoDecoder(site.codec)
    out: list[float] = []
    pictures = 0
    for arrival, data in site.received:
        seq, ts = struct.unpack("!HI", data[2:8])
        for frame in dp.push(seq, ts, bool(data[1] & 0x80), data[12:]):
            try:
                pics = dec.decode(frame.data)
            except DecodeError:
                continue
            for p in pics:
                pictures += 1
                rgb = p.to_ndarray(format="rgb24")
                h, w, _ = rgb.shape
                for k, rect in enumerate(layout_cells("cp-2x2", w, h)[:n_cells]):
                    # the tile: the sender's 4:3 picture fitted into the cell
                    from gateway.media.layout import fit
                    sw, sh = SEND_SIZE[senders[k].codec]
                    r = fit(sw, sh, rect)
                    code = read_code(rgb[r.y:r.y + r.h, r.x:r.x + r.w])
                    sent = senders[k].sent_at_log.get(code) if code is not None else None
                    if sent:
                        # the last send of that clip frame before this arrival
                        before = [t for t in sent if t <= arrival]
                        if before and arrival - before[-1] < 1.0:
                            out.append((arrival - before[-1]) * 1000)
    return out, pictures


async def drive(n: int, seconds: float, layout: str, proc: subprocess.Popen, sites: list[Site],
                clips: dict) -> dict:
    loop = asyncio.get_event_loop()
    gw_ports = json.loads(proc.stdout.readline())["ports"]
    for s, port in zip(sites, gw_ports):
        s.remote = ("127.0.0.1", port)
    gc.collect()
    gc.freeze()
    gc.disable()
    start = loop.time()
    k = 0
    total = int((WARMUP_S + seconds + 0.5) * FPS)
    measuring = False
    while k < total:
        now = time.monotonic()
        if not measuring and k >= WARMUP_S * FPS + 15:
            measuring = True
        for s in sites:
            s.send_frame(now)
        if measuring:
            for s in sites[:4]:
                s.sent_at_log.setdefault((s.pos - 1) % CLIP, []).append(now)
        k += 1
        delay = start + k / FPS - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.3)
    gc.enable()
    gc.unfreeze()
    return {}


def trial(n: int, seconds: float, layout: str, clips_cache: dict, want_ffmpeg: bool = False) -> dict:
    plan = site_plan(n)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sites: list[Site] = []
    for i, (codec, mode, cap) in enumerate(plan):
        key = (i if i < 4 else i % 16, codec, mode)     # the on-screen four have their own; others share 16
        if key not in clips_cache:
            clips_cache[key] = Clip(key[0], codec, mode)
        s = Site(i, codec, mode, clips_cache[key])
        for _ in range(100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port % 2:
                sock.close()
                continue
            try:
                rsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                rsock.bind(("127.0.0.1", port + 1))
            except OSError:
                sock.close()
                continue
            break
        s.port = port
        s.transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(lambda s=s: s, sock=sock))
        s.rtcp, _ = loop.run_until_complete(loop.create_datagram_endpoint(lambda s=s: Rtcp(s), sock=rsock))
        s.decoding_wanted = False
        s.decoding = False
        sites.append(s)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(n), "--seconds", str(seconds), "--layout", layout],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        proc.stdin.write(json.dumps({"ports": [s.port for s in sites]}) + "\n")
        proc.stdin.flush()
        # which site decodes for each group: the server tells us at the end; until then decode a
        # first site of every (codec, mode, cap) class
        seen = set()
        for s, (codec, mode, cap) in zip(sites, plan):
            if (codec, mode, cap) not in seen:
                seen.add((codec, mode, cap))
                s.decoding_wanted = s.decoding = True
        loop.run_until_complete(drive(n, seconds, layout, proc, sites, clips_cache))
        server = json.loads(proc.stdout.readline())
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lat: list[float] = []
    pictures = 0
    for s in sites:
        if s.decoding_wanted and layout != "voice-switched":
            got, pics = latencies(s, sites[:4], min(4, n))
            lat += got
            pictures += pics
    for s in sites:
        s.transport.close()
        s.rtcp.close()
    loop.close()
    asyncio.set_event_loop(None)
    out = {**server, "latency_ms": lat, "pictures_decoded": pictures}
    if want_ffmpeg:
        out["ffmpeg"] = ffmpeg_equivalent(sites, server["groups"], seconds)
    return out


def _mux(path: Path, frames: list[bytes], size: tuple[int, int]) -> None:
    import av
    from fractions import Fraction

    with av.open(str(path), "w", format="matroska") as out:
        st = out.add_stream("h264", rate=FPS)
        st.width, st.height = size
        st.time_base = Fraction(1, FPS)
        for i, data in enumerate(frames):
            pkt = av.Packet(data)
            pkt.stream = st
            pkt.pts = pkt.dts = i
            pkt.time_base = Fraction(1, FPS)
            pkt.is_keyframe = i == 0
            out.mux(pkt)


def ffmpeg_equivalent(sites: list[Site], groups: list[dict], seconds: float) -> dict:
    """The room's media work as one ffmpeg process: the on-screen four decoded (looping their
    clips at 30 fps, as they arrive), scaled into their cells of every picture size the groups
    need, composed, and encoded once per group with our encoder settings; one thread each."""
    from gateway.media.layout import cells as layout_cells
    from gateway.media.layout import fit

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("--ffmpeg needs Debian's ffmpeg (scripts/install-bench-deps.sh)")
    tmp = Path(tempfile.mkdtemp(prefix="cau-bench-ffmpeg-"))
    argv = [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error", "-filter_threads", "1",
            "-filter_complex_threads", "1"]
    on_screen = sites[:4]
    for k, site in enumerate(on_screen):
        if site.codec != "H264":
            raise SystemExit("the ffmpeg comparison reads H.264 clips for the on-screen senders")
        path = tmp / f"sender{k}.mkv"              # a seekable container, so that it loops
        _mux(path, site.clip.raw, SEND_SIZE[site.codec])
        argv += ["-threads", "1", "-re", "-stream_loop", "-1", "-i", str(path)]
    sizes = sorted({(g["settings"][1], g["settings"][2]) for g in groups}, reverse=True)
    graph = []
    for k in range(len(on_screen)):
        graph.append(f"[{k}:v]setpts=N/({FPS}*TB),split={len(sizes)}" + "".join(f"[in{k}s{j}]" for j in range(len(sizes))))
    for j, (w, h) in enumerate(sizes):
        graph.append(f"color=c=black:s={w}x{h}:r={FPS}[bg{j}]")
        prev = f"bg{j}"
        for k, cell in enumerate(layout_cells("cp-2x2", w, h)[:len(on_screen)]):
            sw, sh = SEND_SIZE[on_screen[k].codec]
            r = fit(sw, sh, cell)
            graph.append(f"[in{k}s{j}]scale={r.w}:{r.h}:flags=bilinear[sc{k}s{j}]")
            graph.append(f"[{prev}][sc{k}s{j}]overlay={r.x}:{r.y}:shortest=1[ov{k}s{j}]")
            prev = f"ov{k}s{j}"
        users = [g for g in groups if (g["settings"][1], g["settings"][2]) == (w, h)]
        graph.append(f"[{prev}]split={len(users)}" + "".join(f"[pre{j}_{u}]" for u in range(len(users))))
        for u, g in enumerate(users):     # each group's frame rate (29.97 for H.263 MPI 1)
            fps = g["settings"][3]
            rate = "30000/1001" if abs(fps - 29.97) < 0.01 else f"{fps:g}"
            graph.append(f"[pre{j}_{u}]fps={rate}[out{j}_{u}]")
    argv += ["-filter_complex", ";".join(graph)]
    for j, (w, h) in enumerate(sizes):
        users = [g for g in groups if (g["settings"][1], g["settings"][2]) == (w, h)]
        for u, g in enumerate(users):
            codec, _, _, fps, kbps, mtu = g["settings"]
            argv += ["-map", f"[out{j}_{u}]", "-t", str(WARMUP_S + seconds), "-b:v", f"{kbps}k", "-g", "3000",
                     "-threads", "1"]
            if codec == "H264":
                argv += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
                         "-x264-params", f"slice-max-size={mtu - 100}:repeat-headers=1"]
            elif codec == "VP8":
                argv += ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "16", "-static-thresh", "100",
                         "-lag-in-frames", "0", "-error-resilient", "1"]
            elif codec == "H263":
                argv += ["-c:v", "h263", "-mb_info", str(mtu - 100)]
            else:
                argv += ["-c:v", "h263p", "-ps", str(mtu - 100)]
            argv += ["-f", "null", "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    start = time.monotonic()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    shutil.rmtree(tmp, ignore_errors=True)
    if status != 0:
        raise SystemExit(f"ffmpeg failed (status {status}): {' '.join(argv)}")
    if wall < (WARMUP_S + seconds) * 0.9:
        raise SystemExit(f"ffmpeg stopped after {wall:.1f} s of {WARMUP_S + seconds:g}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="21,221")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--layout", default="cp-2x2")
    ap.add_argument("--ffmpeg", action="store_true", help="run the same media work as one ffmpeg process")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.seconds, args.layout)
        return
    print(f"video room benchmark: layout {args.layout}, {args.seconds:g} s measured after {WARMUP_S:g} s; "
          f"senders {SEND_KBPS} kbit/s at {FPS} fps; {os.cpu_count()} cores")
    print(f"{'sites':>5} {'CPU total':>10} {'CPU/site':>9} {'late':>12} {'dropped':>8} {'groups':>7} "
          f"{'decoders':>8} {'job p50':>8} {'job p95':>8} {'lat p50':>8} {'lat p95':>8} {'mem/site':>9}")
    clips: dict = {}
    results = []
    sizes = [int(x) for x in args.sizes.split(",")]
    for n in sizes:
        r = trial(n, args.seconds, args.layout, clips, args.ffmpeg and n == sizes[-1])
        results.append(r)
        cpu = 100 * r["cpu_s"] / r["wall_s"]
        late = 100 * r["late_ticks"] / max(1, r["ticks"])
        lat = np.array(r["latency_ms"]) if r["latency_ms"] else np.array([np.nan])
        print(f"{n:>5} {cpu:>9.1f}% {cpu / n:>8.2f}% {r['late_ticks']:>5} ({late:.2f}%) {r['dropped']:>8} "
              f"{len(r['groups']):>7} {r['decoders']:>8} {r['job_p50_ms'] or 0:>6.1f}ms {r['job_p95_ms'] or 0:>6.1f}ms "
              f"{np.percentile(lat, 50):>6.1f}ms {np.percentile(lat, 95):>6.1f}ms {r['rss_kib_per_site']:>6.0f}KiB",
              flush=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        per = (100 * b["cpu_s"] / b["wall_s"] - 100 * a["cpu_s"] / a["wall_s"]) / (b["n"] - a["n"])
        print(f"each further site: {per:.3f} % of a core ({a['n']} → {b['n']} sites)")
    last = results[-1]
    print("where the CPU went (% of a core): " + ", ".join(
        f"{k} {100 * v / last['wall_s']:.1f}" for k, v in sorted(last["threads"].items())))
    print("encoder groups:", ", ".join(f"{g['name']} ×{g['receivers']}" for g in last["groups"]))
    print(f"latency samples: {len(last['latency_ms'])} from {last['pictures_decoded']} pictures decoded")
    if "ffmpeg" in last:
        ff = last["ffmpeg"]
        ours = last["cpu_s"] / last["wall_s"]
        codec_only = last["threads"]["codec threads"] / last["wall_s"]
        theirs = ff["cpu_s"] / ff["wall_s"]
        print(f"one ffmpeg process, the same decode + scale + compose + encode: {100 * theirs:.1f} % of a core; "
              f"ours / ffmpeg: {ours / theirs:.2f} in all ({last['n']} sites' RTP included), "
              f"{codec_only / theirs:.2f} for our codec threads alone")


if __name__ == "__main__":
    main()
