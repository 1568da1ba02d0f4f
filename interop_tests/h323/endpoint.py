"""A scriptable H.323 test endpoint: a lab tool that calls (or answers) like a room system.

It runs H.225.0 call signalling and H.245 on Cầu's own stack
(:mod:`gateway.h323.call`: TPKT, Q.931, pycrate PER) with a capability set
like the legacy endpoints the suite has in mind:

=======  =================================================
VSX      G.722, G.711 µ-law, H.263
HDX      G.722, G.711 µ-law, G.711 A-law, H.264
G711     G.711 µ-law, G.711 A-law (voice gateway)
H261     G.711 µ-law, G.711 A-law, H.261 (an older room system)
=======  =================================================

and H.245 in the way it is told: fast start or not, tunnelled or on a
separate connection.  Its media engine is the suite's independent RTP peer
(:class:`interop_tests.peers.rtp_participant.RtpParticipant`: PyAV codecs,
aiortc packets, a plain asyncio socket): it sends a tone or silence, records
what it hears, and DTMF goes as H.245 UserInputIndication.

API (asyncio; Twisted runs on the same loop)::

    ep = H323TestEndpoint("lab-vsx", profile="VSX", tone_hz=1000)
    await ep.call("1000", "127.0.0.1", 1720)     # or: await ep.register((gk, 1719)); await ep.call("1000")
    await ep.wait_media()
    ep.send_dtmf("2468#")
    pcm = ep.heard(0.5)                          # at ep.rx_rate
    await ep.hangup()
    await ep.close()

Command line::

    python -m interop_tests.h323.endpoint --call 1000 --to 127.0.0.1:1720 --profile VSX \\
        --no-fast-start --tone 1000 --seconds 5 --record heard.wav
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import numpy as np

from interop_tests.peers.h235_media import decrypt_rtp, encrypt_rtp
from interop_tests.peers.rtp_participant import CODECS, RtpParticipant, spectrum_peak
from interop_tests.peers.video_peer import VideoPeer, moving

log = logging.getLogger("cau.h323.testep")

PROFILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "VSX": (("G722", "PCMU"), ("H263",)),
    "HDX": (("G722", "PCMU", "PCMA"), ("H264",)),
    "G711": (("PCMU", "PCMA"), ()),
    "H261": (("PCMU", "PCMA"), ("H261",)),     # an old room system: G.711 and H.261 only
}


def _twisted():
    from gateway import loop as _loop

    _loop.install()
    from twisted.internet import reactor

    return reactor


async def _await(d: Any, timeout: float | None = None) -> Any:
    fut = d.asFuture(asyncio.get_event_loop())
    return await (asyncio.wait_for(fut, timeout) if timeout else fut)


class EndpointAudio(RtpParticipant):
    """The RTP participant with a send codec and a receive codec that may differ (set once the
    logical channels are known) and a filter on the receive payload type."""

    def __init__(self, codec: str, **kw: Any) -> None:
        super().__init__(codec, **kw)
        self.rx_codec, self.rx_pt, self.rx_rate = codec, self.pt, self.rate
        self.foreign_packets = 0
        self._tone: float | None = None
        #: H.235.6 per direction: (key, cipher PT) we encrypt with; (key, cipher PT) we decrypt with
        self.tx_crypt: tuple[bytes, int] | None = None
        self.rx_crypt: tuple[bytes, int] | None = None
        self.undecryptable = 0
        self.sent_wire: list[bytes] = []         # the first packets as they went on the wire

    def configure(self, tx_codec: str, tx_pt: int, rx_codec: str, rx_pt: int) -> None:
        if (tx_codec, tx_pt) != (self.codec, self.pt):
            t = RtpParticipant(tx_codec, tx_pt)
            self.codec, self.pt, self.rate, self.clock = tx_codec, tx_pt, t.rate, t.clock
            self.samples, self.ts_step, self._enc, self._pts = t.samples, t.ts_step, t._enc, 0
            if self._tone is not None:
                self.play_tone(self._tone, self._level)
        if (rx_codec, rx_pt) != (self.rx_codec, self.rx_pt):
            r = RtpParticipant(rx_codec, rx_pt)
            self._dec, self.rx_rate = r._dec, r.rate
            self.received.clear()
        self.rx_codec, self.rx_pt = rx_codec, rx_pt

    def play_tone(self, freq: float, level_dbfs: float = -12.0) -> None:
        self._tone, self._level = freq, level_dbfs
        super().play_tone(freq, level_dbfs)

    def play_silence(self) -> None:
        self._tone = None
        super().play_silence()

    def _send(self, data: bytes) -> None:
        if self.tx_crypt is not None and len(data) > 12 and data[1] & 0x7F == self.pt:
            data = encrypt_rtp(data, *self.tx_crypt)
        if len(self.sent_wire) < 50:
            self.sent_wire.append(data)
        super()._send(data)

    def _on_rtp(self, data: bytes, addr: Any) -> None:
        if self.rx_crypt is not None and len(data) >= 2 and not 200 <= data[1] <= 206:
            clear = decrypt_rtp(data, self.rx_crypt[0], self.rx_crypt[1], self.rx_pt)
            if clear is None:
                self.undecryptable += 1
                return
            data = clear
        if len(data) >= 2 and not 200 <= data[1] <= 206:
            pt = data[1] & 0x7F
            if pt not in (self.rx_pt, self.dtmf_pt):
                self.foreign_packets += 1
                return
        super()._on_rtp(data, addr)

    def heard(self, last_seconds: float | None = None) -> np.ndarray:
        if not self.received:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate([p for _, p in self.received])
        return pcm[-int(last_seconds * self.rx_rate):] if last_seconds is not None else pcm


class H323TestEndpoint:
    """One H.323 endpoint for the lab (one call at a time).  See the module docstring."""

    def __init__(self, alias: str = "lab-ep", number: str | None = None, profile: str = "HDX",
                 fast_start: bool = True, tunnelling: bool = True, separate_h245: bool = False,
                 audio_codec_pref: str | None = None, tone_hz: float | None = None, dtmf_pt: int | None = None,
                 host: str = "127.0.0.1", video: bool = True,
                 video_colour: tuple[int, int, int] = (128, 128, 128), media_encryption: str = "off") -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile {profile!r}: one of {', '.join(PROFILES)}")
        audio, vid = PROFILES[profile]
        if audio_codec_pref is not None:
            if audio_codec_pref not in audio:
                raise ValueError(f"{audio_codec_pref} is not in the {profile} profile ({', '.join(audio)})")
            audio = (audio_codec_pref,) + tuple(c for c in audio if c != audio_codec_pref)
        self.alias, self.number, self.profile, self.host = alias, number, profile, host
        self.audio_codecs, self.video_codecs = audio, (vid if video else ())
        self.fast_start, self.tunnelling, self.separate_h245 = fast_start, tunnelling, separate_h245
        self.tone_hz = tone_hz
        self.media_encryption = media_encryption   # H.235.6: off | preferred | required
        self.dtmf_pt = dtmf_pt if dtmf_pt is not None else 101
        from gateway.catalogue import default_catalogue

        self.catalogue = default_catalogue()
        self.reactor = _twisted()
        self.call_obj: Any = None
        self.audio: EndpointAudio | None = None
        self.video: VideoPeer | None = None
        self.video_colour = video_colour
        self.gk: Any = None
        self._listener: Any = None
        self.incoming: asyncio.Queue | None = None
        self.user_input: list[str] = []          # digits the far end sent us (H.245 UII)
        self.fast_updates = 0
        self._media_event = asyncio.Event()

    # ------------------------------------------------------------------ set-up
    def _options(self) -> Any:
        from gateway.h323.call import CallOptions
        from gateway.h323.h245 import TERMINAL_TYPES

        aliases: list[tuple[str, str]] = [("h323-ID", self.alias)]
        if self.number:
            aliases.insert(0, ("dialledDigits", self.number))
        return CallOptions(fast_start=self.fast_start, tunnelling=self.tunnelling,
                           separate_h245=self.separate_h245, audio_codecs=self.audio_codecs,
                           video_codecs=self.video_codecs, open_video=bool(self.video_codecs),
                           terminal_type=TERMINAL_TYPES["terminal"], endpoint_kind="terminal",
                           aliases=tuple(aliases), display=f"{self.profile} {self.alias}",
                           bind=self.host, advertise=self.host, media_encryption=self.media_encryption)

    async def _media(self) -> None:
        if self.audio is None:
            self.audio = EndpointAudio(self.audio_codecs[0], host=self.host, dtmf_pt=self.dtmf_pt)
            await self.audio.start()
            if self.tone_hz:
                self.audio.play_tone(self.tone_hz)
        if self.video is None and self.video_codecs:
            self.video = VideoPeer(None, picture=moving(self.video_colour), fps=15, host=self.host)

    def _new_call(self, role: str) -> Any:
        from gateway.h323.call import H323Call

        call = H323Call(role, self._options(), self.catalogue, reactor=self.reactor, name=f"ep-{self.alias}")
        self._hook(call)
        return call

    def _hook(self, call: Any) -> None:
        call.media_address = self._media_address
        call.on_channels = self._on_channels
        call.on_user_input = lambda c, d: self.user_input.append(d)
        call.on_fast_update = self._fast_update
        call.on_released = lambda c: self._released()
        self.call_obj = call
        self._media_event = asyncio.Event()

    def _media_address(self, call: Any, media: str) -> Any:
        p = self.audio if media == "audio" else self.video if media == "video" else None
        if p is None:
            return None
        return (self.host, p.port), (self.host, p.port + 1)

    def _on_channels(self, call: Any) -> None:
        tx, rx = call.channel("audio", "tx"), call.channel("audio", "rx")
        a = self.audio
        if a is None:
            return
        if tx is not None and tx.remote_media is not None:
            a.set_remote(*tx.remote_media)
        if tx is not None and rx is not None and tx.remote_media is not None:
            tx_pt = tx.payload_type if tx.payload_type is not None else CODECS[tx.codec_name][4]
            rx_pt = rx.payload_type if rx.payload_type is not None else CODECS[rx.codec_name][4]
            a.configure(tx.codec_name, tx_pt, rx.codec_name, rx_pt)
            a.tx_crypt = (tx.session_key, tx.cipher_pt) if tx.encrypted and tx.session_key else None
            a.rx_crypt = (rx.session_key, rx.cipher_pt) if rx.encrypted and rx.session_key else None
            if a._task is None:
                a.start_sending()
            self._media_event.set()
        vtx, vrx = call.channel("video", "tx"), call.channel("video", "rx")
        v = self.video
        if v is not None and (vtx is not None or vrx is not None):
            v.configure(vtx.format if vtx is not None else None, vrx.format if vrx is not None else None)
            if vrx is not None:
                v.ask_keyframe = lambda c=call, n=vrx.number: c.h245.request_fast_update(n) \
                    if c.h245 is not None and not c.h245.ended else None
            if vtx is not None and vtx.remote_media is not None:
                v.start(vtx.remote_media[1], vtx.remote_media[0])

    def _fast_update(self, call: Any, number: int | None) -> None:
        """H.245 videoFastUpdatePicture: the far end wants an intra picture from us."""
        self.fast_updates += 1
        if self.video is not None:
            self.video.force_keyframe("h245")

    def _released(self) -> None:
        if self.audio is not None:
            self.audio.stop_sending()
        self._media_event.set()

    # ------------------------------------------------------------------ RAS
    async def register(self, gatekeeper: tuple[str, int], timeout: float = 10.0, *,
                       password: str | None = None, discover: bool = False) -> str:
        """Register (RRQ → RCF) with ``gatekeeper``; returns the endpointIdentifier.  Also starts
        answering calls (the call signalling address registered).  ``password``: H.235.1 tokens
        on every RAS message, as a room system with a gatekeeper password sends them."""
        from gateway.h323.gk_client import GatekeeperClient

        port = await self.listen()
        aliases = [("h323-ID", self.alias)] + ([("dialledDigits", self.number)] if self.number else [])
        self.gk = GatekeeperClient(tuple(gatekeeper), aliases, (self.host, port), endpoint_kind="terminal",
                                   reactor=self.reactor, ras_timeout=2.0, ras_tries=2, password=password,
                                   discover=discover)
        await _await(self.gk.start(self.host, 0), timeout)
        return self.gk.endpoint_id

    # ------------------------------------------------------------------ calls
    async def call(self, number: str, host: str | None = None, port: int | None = None, *,
                   timeout: float = 10.0) -> Any:
        """Call ``number`` at ``host:port`` (or through the registered gatekeeper: ARQ → ACF).
        Returns once the call is connected; ``RuntimeError`` with the cause if it is released."""
        from gateway.h323.call import _alias_for, place_call

        await self._media()
        call = self._new_call("caller")
        if host is None:
            if self.gk is None:
                raise RuntimeError("no host given and not registered with a gatekeeper")
            call.call_id, call.conference_id = os.urandom(16), os.urandom(16)
            acf = await _await(self.gk.admission(number, call.call_id, call.conference_id, 3840), timeout)
            if not acf.ok:
                raise RuntimeError(f"the gatekeeper refused the call: {acf.reason}")
            host, port = acf.dest_call_signal_address
            self.admission = acf
        place_call(call, host, port or 1720, [_alias_for(number)], timeout=timeout)
        await self.wait_connected(timeout)
        return call

    async def wait_connected(self, timeout: float = 10.0) -> None:
        call = self.call_obj
        await asyncio.wait_for(asyncio.wait([call.connected_d.asFuture(asyncio.get_event_loop()),
                                             call.released.asFuture(asyncio.get_event_loop())],
                                            return_when=asyncio.FIRST_COMPLETED), timeout)
        if call.state == "released":
            raise RuntimeError(f"call released: cause {call.cause} ({call.release_text})")
        from interop_tests import evidence

        evidence.identify("H.225.0 vendor (its CONNECT)", call.remote_vendor)

    async def wait_media(self, timeout: float = 10.0) -> None:
        """Until audio channels are open both ways (and we are sending)."""
        await asyncio.wait_for(self._media_event.wait(), timeout)
        if self.call_obj.state == "released":
            raise RuntimeError(f"call released: cause {self.call_obj.cause} ({self.call_obj.release_text})")

    async def wait_released(self, timeout: float = 10.0) -> Any:
        if self.call_obj is None:
            return None
        await _await(self.call_obj.released, timeout)
        return self.call_obj

    async def listen(self, port: int = 0) -> int:
        """Answer incoming calls on ``host:port`` (auto-answer); returns the port."""
        from gateway.h323.call import H323CallFactory

        if self._listener is not None:
            return self._listener.getHost().port
        await self._media()
        self.incoming = asyncio.Queue()

        def prepare(call: Any) -> None:
            self._hook(call)
            call.on_incoming = lambda c: self.incoming.put_nowait(c)

        factory = H323CallFactory("callee", self._options, self.catalogue, prepare, reactor=self.reactor,
                                  name=f"ep-{self.alias}-in")
        self._listener = self.reactor.listenTCP(port, factory, interface=self.host)
        return self._listener.getHost().port

    # ------------------------------------------------------------------ during the call
    def send_tone(self, freq: float, level_dbfs: float = -12.0) -> None:
        self.audio.play_tone(freq, level_dbfs)

    def send_silence(self) -> None:
        self.audio.play_silence()

    def send_dtmf(self, digits: str) -> None:
        """DTMF as H.245 UserInputIndication (signal when the far end declared dtmf, else alphanumeric)."""
        self.call_obj.send_user_input(digits)

    def heard(self, last_seconds: float | None = None) -> np.ndarray:
        return self.audio.heard(last_seconds) if self.audio else np.zeros(0, dtype=np.int16)

    @property
    def rx_rate(self) -> int:
        return self.audio.rx_rate if self.audio else 8000

    def clear(self) -> None:
        if self.audio:
            self.audio.clear()

    @property
    def channels(self) -> list[tuple[str, str, str | None, str]]:
        """(direction, media, codec, state) of every logical channel of the current call."""
        c = self.call_obj
        return [] if c is None else [(ch.direction, ch.media, ch.codec_name, ch.state) for ch in c.channels.values()]

    @property
    def release_cause(self) -> int | None:
        return None if self.call_obj is None else self.call_obj.cause

    @property
    def connected(self) -> bool:
        return self.call_obj is not None and self.call_obj.state == "connected"

    async def hangup(self, cause: int = 16) -> None:
        if self.call_obj is not None and self.call_obj.state != "released":
            self.call_obj.hangup(cause, "the test endpoint hung up")
        if self.gk is not None and self.call_obj is not None and self.call_obj.call_id in self.gk.calls:
            await _await(self.gk.disengage(self.call_obj.call_id, self.call_obj.conference_id), 5)
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Hang up, unregister, stop listening, close the media sockets."""
        await self.hangup()
        if self.gk is not None:
            try:
                await _await(self.gk.stop(), 5)
            except Exception:
                pass
            self.gk = None
        if self._listener is not None:
            d = self._listener.stopListening()
            self._listener = None
            if d is not None:
                await _await(d, 5)
        if self.audio is not None:
            self.audio.close()
        if self.video is not None:
            await _await(self.video.stop(), 5)
        self.audio = self.video = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="h323-endpoint", description=__doc__.split("\n\n")[0])
    ap.add_argument("--call", metavar="NUMBER", help="the number (or alias) to call")
    ap.add_argument("--to", metavar="HOST:PORT", help="call signalling address (default: through --gatekeeper)")
    ap.add_argument("--gatekeeper", metavar="HOST:PORT", help="register here first (RRQ) and call through it (ARQ)")
    ap.add_argument("--answer", metavar="PORT", type=int, help="answer calls on this port instead of calling")
    ap.add_argument("--calls", type=int, default=1, help="with --answer: how many calls to answer (0: until stopped)")
    ap.add_argument("--alias", default="lab-ep")
    ap.add_argument("--host", default="127.0.0.1", help="our own address (signalling and media)")
    ap.add_argument("--number", help="our own E.164 number")
    ap.add_argument("--profile", choices=list(PROFILES), default="HDX")
    ap.add_argument("--no-fast-start", action="store_true")
    ap.add_argument("--no-tunnelling", action="store_true")
    ap.add_argument("--separate-h245", action="store_true", help="offer our own H.245 address in Setup")
    ap.add_argument("--codec", help="preferred audio codec (from the profile)")
    ap.add_argument("--tone", type=float, help="send a sine at this frequency (Hz)")
    ap.add_argument("--dtmf", help="send these digits (H.245 UserInputIndication) once media runs")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--record", help="write what was heard to this WAV")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    if not args.call and args.answer is None:
        ap.error("give --call NUMBER (with --to or --gatekeeper) or --answer PORT")

    def hostport(text: str, default: int) -> tuple[str, int]:
        h, _, p = text.rpartition(":")
        return (h, int(p)) if h else (text, default)

    async def go() -> int:
        ep = H323TestEndpoint(args.alias, args.number, args.profile, fast_start=not args.no_fast_start,
                              tunnelling=not args.no_tunnelling, separate_h245=args.separate_h245,
                              audio_codec_pref=args.codec, tone_hz=args.tone, host=args.host)
        try:
            if args.gatekeeper:
                eid = await ep.register(hostport(args.gatekeeper, 1719))
                print(f"registered as {eid}")
            async def one_call() -> None:
                print(f"connected; channels: {ep.channels}", flush=True)
                await ep.wait_media()
                if args.dtmf:
                    ep.send_dtmf(args.dtmf)
                try:                             # the far end may release first (an operator removed us)
                    await ep.wait_released(timeout=args.seconds)
                    print(f"released by the far end: cause {ep.release_cause}", flush=True)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                freq, level = spectrum_peak(ep.heard(1.0), ep.rx_rate)
                print(f"heard {freq:.0f} Hz at {level:.1f} dBFS; user input {''.join(ep.user_input) or '-'}",
                      flush=True)
                if args.record:
                    import wave

                    with wave.open(args.record, "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(ep.rx_rate)
                        w.writeframes(ep.heard().astype("<i2").tobytes())
                if ep.connected:
                    await ep.hangup()
                    print(f"released: cause {ep.release_cause}", flush=True)

            if args.answer is not None:
                port = await ep.listen(args.answer)
                print(f"answering on {ep.host}:{port}", flush=True)
                n = 0
                while args.calls == 0 or n < args.calls:     # 0: every call until stopped (a lab target)
                    await asyncio.wait_for(ep.incoming.get(), None)
                    n += 1
                    try:
                        await one_call()
                    except (RuntimeError, asyncio.TimeoutError, TimeoutError) as exc:
                        print(f"call {n} failed: {exc}", flush=True)
                        if args.calls == 1:
                            raise RuntimeError(str(exc)) from None
                    ep.clear()
            else:
                host, port = hostport(args.to, 1720) if args.to else (None, None)
                await ep.call(args.call, host, port)
                await one_call()
            return 0
        except RuntimeError as exc:
            print(f"call failed: {exc}")
            return 1
        finally:
            await ep.close()

    from gateway import loop as _loop

    loop = _loop.install()
    return loop.run_until_complete(go())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
