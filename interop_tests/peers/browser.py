"""Headless Chromium as a participant: Debian's ``chromium`` driven by Playwright (async API, on
the suite's one event loop), never a browser Playwright downloads.

The fake camera and microphone play files the test writes: a solid colour (Y4M) and a sine (WAV),
so what the other sites see and hear can be checked. What the browser receives is read in the
page: ``getStats()`` (packets, frames decoded, key frames, PLIs), the colours of the remote
``<video>`` drawn onto a canvas, and the levels of tones in its sound through a Web Audio analyser.
"""
from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns"]


def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        raise RuntimeError("Debian's chromium is not installed (scripts/install-test-deps.sh installs it)")
    return path


def write_y4m(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (320, 240), frames: int = 30) -> Path:
    """A still picture of one colour with a moving white square, as YUV4MPEG2 (4:2:0)."""
    w, h = size
    r, g, b = rgb
    y = 0.257 * r + 0.504 * g + 0.098 * b + 16
    u = -0.148 * r - 0.291 * g + 0.439 * b + 128
    v = 0.439 * r - 0.368 * g - 0.071 * b + 128
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            Y = np.full((h, w), y, np.uint8)
            x = (i * 6) % (w - 24)
            Y[h - 30:h - 6, x:x + 24] = 235
            f.write(b"FRAME\n" + Y.tobytes() + np.full((h // 2, w // 2), u, np.uint8).tobytes()
                    + np.full((h // 2, w // 2), v, np.uint8).tobytes())
    return path


def write_tone(path: Path, freq: float, seconds: float = 4.0, rate: int = 48000, level_dbfs: float = -12) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (32767 * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


STATS_JS = """async () => {
  if (typeof pc === "undefined" || !pc) return null;
  const out = {state: pc.connectionState, inbound: {}, outbound: {}};
  const stats = await pc.getStats();
  const codecs = {};
  stats.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  stats.forEach((s) => {
    if (s.type === "inbound-rtp") out.inbound[s.kind] = {packets: s.packetsReceived, lost: s.packetsLost,
      frames: s.framesDecoded || 0, keyframes: s.keyFramesDecoded || 0, pli: s.pliCount || 0, fir: s.firCount || 0,
      width: s.frameWidth || 0, height: s.frameHeight || 0, codec: codecs[s.codecId] || null};
    if (s.type === "outbound-rtp") out.outbound[s.kind] = {packets: s.packetsSent, frames: s.framesEncoded || 0,
      codec: codecs[s.codecId] || null, width: s.frameWidth || 0};
  });
  return out;
}"""

# the remote picture's colour in each cell of a 2x2 grid (median of the middle of each cell)
COLOURS_JS = """() => {
  const v = document.getElementById("remote");
  if (!v || !v.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext("2d");
  g.drawImage(v, 0, 0);
  const cells = [[0, 0], [0.5, 0], [0, 0.5], [0.5, 0.5]];
  return cells.map(([x, y]) => {
    const d = g.getImageData(Math.floor((x + 0.15) * c.width), Math.floor((y + 0.15) * c.height),
                             Math.floor(0.2 * c.width), Math.floor(0.2 * c.height)).data;
    const ch = [[], [], []];
    for (let i = 0; i < d.length; i += 4) { ch[0].push(d[i]); ch[1].push(d[i + 1]); ch[2].push(d[i + 2]); }
    return ch.map((a) => { a.sort((p, q) => p - q); return a[a.length >> 1]; });
  });
}"""

# levels (dB, relative) of given frequencies in the sound the page plays (the remote stream)
TONES_JS = """async (freqs) => {
  const v = document.getElementById("remote");
  if (!v || !v.srcObject || !v.srcObject.getAudioTracks().length) return null;
  if (!window.__an) {
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(new MediaStream(v.srcObject.getAudioTracks()));
    const an = ctx.createAnalyser(); an.fftSize = 8192; an.smoothingTimeConstant = 0.5;
    src.connect(an);
    window.__an = an; window.__ctx = ctx;
    await new Promise((r) => setTimeout(r, 800));
  }
  const an = window.__an, ctx = window.__ctx;
  const data = new Float32Array(an.frequencyBinCount);
  an.getFloatFrequencyData(data);
  const bin = ctx.sampleRate / an.fftSize;
  const level = (f) => Math.max(...[-2, -1, 0, 1, 2].map((k) => data[Math.round(f / bin) + k]));
  const floor = data.slice(Math.round(150 / bin), Math.round(3000 / bin)).sort()[Math.round((3000 - 150) / bin / 2)];
  return {floor, levels: freqs.map(level)};
}"""


class Browser:
    """One Chromium with one page (see the module docstring). ``await start()`` / ``await stop()``."""

    def __init__(self, workdir: Path, *, colour: tuple[int, int, int], tone_hz: float) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.video_file = write_y4m(self.workdir / "camera.y4m", colour)
        self.audio_file = write_tone(self.workdir / "mic.wav", tone_hz)
        self._pw: Any = None
        self.browser: Any = None
        self.page: Any = None
        self.console: list[str] = []

    async def start(self) -> "Browser":
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=FLAGS + [f"--use-file-for-fake-video-capture={self.video_file}",
                          f"--use-file-for-fake-audio-capture={self.audio_file}"])
        ctx = await self.browser.new_context(ignore_https_errors=True, permissions=["camera", "microphone"],
                                             viewport={"width": 1000, "height": 800}, locale="vi-VN")
        self.page = await ctx.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return self

    async def stats(self) -> dict | None:
        return await self.page.evaluate(STATS_JS)

    async def colours(self) -> list[list[int]] | None:
        return await self.page.evaluate(COLOURS_JS)

    async def tones(self, freqs: list[float]) -> dict | None:
        return await self.page.evaluate(TONES_JS, freqs)

    async def stop(self) -> None:
        if self.browser is not None:
            try:
                await self.browser.close()
            except Exception:
                pass
        if self._pw is not None:
            await self._pw.stop()
        self.browser = self._pw = None
