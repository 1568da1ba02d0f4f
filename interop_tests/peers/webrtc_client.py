"""A WebRTC participant for tests, on aiortc: sends a tone and a coloured picture, keeps what it
receives (audio at 16 kHz for tone checks, the latest decoded picture for colour checks), and
speaks WHIP / WHEP (RFC 9725) over HTTP(S) the way real clients do:

* ``trickle=True``: POST the offer without waiting, then PATCH the candidates in batches with
  ``If-Match`` (Meetecho simple-whip-client's habit);
* ``trickle=False`` (default): every candidate already in the offer, never a PATCH (GStreamer);
* ``obs=True``: the offer holds no candidate at all and the client gathers only after the
  answer (OBS Studio's habit): the server must learn its address from its connectivity checks.

It is an independent implementation of the client side written from the RFC, used only by the
suite; the gateway's side is ``gateway.webrtc``.
"""
from __future__ import annotations

import asyncio
import fractions
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48000


class ToneTrack(MediaStreamTrack):
    """A sine (or silence) in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float | None = 440.0, level_dbfs: float = -12.0) -> None:
        super().__init__()
        self.freq = freq
        self.amp = 32767 * 10 ** (level_dbfs / 20)
        self._n = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self._n * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(960) + self._n * 960) / RATE
        pcm = (self.amp * np.sin(2 * np.pi * self.freq * t)).astype(np.int16) if self.freq else np.zeros(960, np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * 960
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


class ColourTrack(MediaStreamTrack):
    """A solid colour with a small moving square (so encoders have something to do)."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int], size: tuple[int, int] = (640, 360), fps: float = 15) -> None:
        super().__init__()
        self.rgb = rgb
        self.size = size
        self.fps = fps
        self._n = 0
        self._t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self._n / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        w, h = self.size
        img = np.empty((h, w, 3), np.uint8)
        img[:] = self.rgb
        x = (self._n * 8) % (w - 32)
        img[h - 40:h - 8, x:x + 32] = (255, 255, 255)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = int(self._n * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


@dataclass
class Received:
    audio: list[np.ndarray] = field(default_factory=list)     # 16 kHz mono chunks
    frames: int = 0
    picture: np.ndarray | None = None                         # latest, RGB
    size: tuple[int, int] = (0, 0)


class HttpAnswer(Exception):
    def __init__(self, status: int, body: str, headers: dict[str, str]):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """One request (a self-signed certificate is accepted: the suite made it); (status, headers, body)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode("utf-8", "replace")


class WebRtcClient:
    """One participant (see the module docstring)."""

    def __init__(self, *, tone: float | None = None, colour: tuple[int, int, int] | None = None,
                 receive: bool = True, send: bool = True, video_codec: str | None = None) -> None:
        self.pc = RTCPeerConnection()
        self.received = Received()
        self.tasks: list[asyncio.Task] = []
        self.resource: str | None = None
        self.etag: str | None = None
        self.headers: dict[str, str] = {}
        direction = "sendrecv" if (send and receive) else ("sendonly" if send else "recvonly")
        self.audio_tx = self.pc.addTransceiver(ToneTrack(tone) if send else "audio", direction=direction)
        self.video_tx = self.pc.addTransceiver(ColourTrack(colour or (128, 128, 128)) if send else "video",
                                               direction=direction)
        if video_codec:
            from aiortc import RTCRtpSender

            caps = RTCRtpSender.getCapabilities("video").codecs
            self.video_tx.setCodecPreferences([c for c in caps if c.mimeType.lower() == f"video/{video_codec.lower()}"]
                                              + [c for c in caps if c.mimeType.lower() == "video/rtx"])

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    for f in resampler.resample(frame):
                        self.received.audio.append(f.to_ndarray().reshape(-1).copy())
                    if len(self.received.audio) > 1000:
                        del self.received.audio[:-500]
                else:
                    self.received.frames += 1
                    if self.received.frames % 3 == 1:
                        self.received.picture = frame.to_ndarray(format="rgb24")
                        self.received.size = (frame.width, frame.height)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def heard(self, seconds: float = 1.0) -> np.ndarray:
        chunks = self.received.audio
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm[-int(16000 * seconds):]

    # -- WHIP / WHEP ------------------------------------------------------------------------
    async def offer(self, *, obs: bool = False) -> str:
        offer = await self.pc.createOffer()
        if obs:   # no candidate in the offer; gathering starts only once the answer is in
            return "\r\n".join(l for l in offer.sdp.split("\r\n") if not l.startswith("a=candidate")
                               and not l.startswith("a=end-of-candidates")) + ""
        await self.pc.setLocalDescription(offer)
        return self.pc.localDescription.sdp

    async def publish(self, url: str, token: str | None = None, *, trickle: bool = False, obs: bool = False,
                      query: str = "") -> str:
        """POST the offer (201 expected; HttpAnswer otherwise), apply the answer; the resource URL."""
        loop = asyncio.get_event_loop()
        if obs:
            offer = await self.pc.createOffer()
            sdp = _strip_candidates(offer.sdp)
            pending_local = offer
        elif trickle:
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
            full = self.pc.localDescription.sdp
            sdp = _strip_candidates(full)
            pending_local = None
        else:
            sdp = await self.offer()
            full = sdp
            pending_local = None
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, h, body = await loop.run_in_executor(None, lambda: http("POST", url + query, sdp.encode(), headers))
        if status != 201:
            raise HttpAnswer(status, body, h)
        self.headers = h
        self.resource = urllib.parse.urljoin(url, h["location"])
        self.etag = h.get("etag")
        if obs:
            await self.pc.setLocalDescription(pending_local)     # gathers now, after the answer
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        if trickle:
            await self._trickle(full, token)
        return self.resource

    async def _trickle(self, full_sdp: str, token: str | None) -> None:
        """PATCH our candidates in two batches, then end-of-candidates (RFC 9725 §4.3.1, RFC 8840)."""
        lines = full_sdp.split("\r\n")
        ufrag = next(l for l in lines if l.startswith("a=ice-ufrag:"))
        pwd = next(l for l in lines if l.startswith("a=ice-pwd:"))
        mid = next(l for l in lines if l.startswith("a=mid:"))
        cands = [l for l in lines if l.startswith("a=candidate:")]
        loop = asyncio.get_event_loop()
        batches = [cands[: len(cands) // 2], cands[len(cands) // 2:]]
        for i, batch in enumerate(batches):
            frag = [ufrag, pwd, "m=audio 9 UDP/TLS/RTP/SAVPF 0", mid, *batch]
            if i == len(batches) - 1:
                frag.append("a=end-of-candidates")
            headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": self.etag or "*"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            status, _h, body = await loop.run_in_executor(
                None, lambda f=frag: http("PATCH", self.resource, ("\r\n".join(f) + "\r\n").encode(), headers))
            if status != 204:
                raise HttpAnswer(status, body, _h)

    async def delete(self, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        loop = asyncio.get_event_loop()
        status, _h, _b = await loop.run_in_executor(None, lambda: http("DELETE", self.resource, None, headers))
        return status

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline or self.pc.connectionState in ("failed", "closed"):
                raise AssertionError(f"the WebRTC client is {self.pc.connectionState} after {timeout:g} s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


def _strip_candidates(sdp: str) -> str:
    return "\r\n".join(l for l in sdp.split("\r\n")
                       if not l.startswith("a=candidate") and not l.startswith("a=end-of-candidates"))


def status_json(url: str) -> dict[str, Any]:
    return json.loads(http("GET", url)[2])

