"""One leg's audio, glued: RTP in → jitter buffer → decoder → mixer; mixer → encoder → RTP out.

``AudioStream`` is both the mixer's ``AudioSource`` (``pull``) and its
``AudioSink`` (``encoder_key``, ``make_encoder``, ``deliver``). It knows RTP
and codecs, nothing of the signaling that negotiated them: SIP, H.323 and
WebRTC adapters (and the test harnesses) build one from what they agreed on.

Hot path, per received packet: ``RtpSession.datagramReceived`` →
``_on_packet`` → ``JitterBuffer.put``. Per 20 ms tick: ``pull`` (one
``JitterBuffer.get`` and one decode or concealment) and, unless this leg shares
its room's encoded mix, one encode in the mixer.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from gateway.media.codecs import MediaFormat
from gateway.media.audio_codecs import AudioDecoder, AudioEncoder, mean_square
from gateway.media.dtmf import DtmfReceiver
from gateway.media.jitterbuffer import JitterBuffer
from gateway.media.rtp import RtpSession

MIX_RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = MIX_RATE * FRAME_MS // 1000
#: mean square (int16²) under which a frame counts as quiet enough to shed: -50 dBFS
QUIET_MS = (32768.0 * 10 ** (-50 / 20)) ** 2


class AudioStream:
    def __init__(
        self,
        session: RtpSession,
        rx: MediaFormat,
        tx: MediaFormat,
        dtmf_pt: int | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if rx.codec.media != "audio" or tx.codec.media != "audio":
            raise ValueError("AudioStream carries audio codecs only")
        self.session = session
        self.rx, self.tx = rx, tx
        self.dtmf_pt = dtmf_pt
        self.on_dtmf = on_dtmf
        self._clock = clock
        frame_ticks = rx.codec.clock_rate * FRAME_MS // 1000  # the mixer's frame; other packet times are re-framed
        self.jitter = JitterBuffer(rx.codec.clock_rate, frame_ticks)
        self.jitter.on_retime = self._retimed
        # Re-framing: a sender whose packets are not 20 ms long (10, 30, 40, 60 ms...) is
        # decoded a packet at a time into a FIFO at 16 kHz, and each tick takes 20 ms of it.
        self._frame_ticks = frame_ticks  # 20 ms at the RTP clock
        self._reframe = False
        self._fifo = np.zeros(0, dtype=np.int16)
        self._chunk: np.ndarray | None = None  # this tick's re-framed 20 ms
        self.decoder = AudioDecoder(rx.codec, out_rate=MIX_RATE)
        self._dtmf = DtmfReceiver()
        self._ssrc: int | None = None
        self._rx_pt = rx.payload_type
        self._put = self.jitter.put
        self._decode_level = self.decoder.decode_level
        self.unknown_pt = 0
        self.ssrc_changes = 0
        # Same codec, packet time and bitrate → the same encoded bytes can go to every such leg.
        self.tx_ptime_ms = tx.ptime_ms or FRAME_MS
        self.encoder_key = (tx.codec.name, self.tx_ptime_ms, tx.bitrate_cap)
        self._tx_pt = tx.payload_type
        self._send = session.send
        session.on_packet = self._on_packet

    # -- receive (per packet) -------------------------------------------------
    def _on_packet(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes, ssrc: int, arrival: float) -> None:
        if pt == self._rx_pt:
            if ssrc != self._ssrc:
                if self._ssrc is not None:
                    self.jitter.reset()
                    self.ssrc_changes += 1
                self._ssrc = ssrc
            self._put(seq, ts, payload, arrival, marker)
        elif pt == self.dtmf_pt:
            self.jitter.skip(seq)
            digit = self._dtmf.feed(payload, ts, marker)
            if digit is not None and self.on_dtmf is not None:
                self.on_dtmf(digit)
        else:
            self.unknown_pt += 1

    # -- mixer source (per tick) ----------------------------------------------
    def _retimed(self, ticks: int) -> None:
        if ticks != self._frame_ticks:
            self._reframe = True  # (back to 20 ms: pull_level leaves re-framing when the FIFO is empty)

    def _pull_reframed(self) -> np.ndarray | None:
        """This tick's 20 ms at 16 kHz from packets of another duration (``None``: silence)."""
        jb = self.jitter
        fifo = self._fifo
        now = self._clock()
        for _ in range(8):  # (10 ms packets: two per tick; never loop for ever)
            if len(fifo) >= FRAME_SAMPLES:
                break
            kind, payload = jb.get(now)
            if kind == "frame":
                pcm = self.decoder.decode(payload)
            elif kind == "lost":
                pcm = self.decoder.conceal(int(jb.frame_ms * MIX_RATE / 1000), payload)
            else:  # silence, DTX, nothing yet
                break
            fifo = np.concatenate((fifo, pcm)) if len(fifo) else pcm
        if not len(fifo):
            self._fifo = fifo
            return None
        if len(fifo) < FRAME_SAMPLES:  # the sender went quiet mid-frame: pad with silence
            out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            out[:len(fifo)] = fifo
            self._fifo = fifo[:0]
            return out
        self._fifo = fifo[FRAME_SAMPLES:]
        return fifo[:FRAME_SAMPLES]

    def _spill(self, pcm: np.ndarray) -> np.ndarray:
        """A packet of another duration than 20 ms came through the plain path (before the
        jitter buffer has recognised the sender's packet duration): re-frame from now on."""
        self._reframe = True
        self._fifo = pcm
        return self._pull_reframed()  # type: ignore[return-value]  (pcm is not empty)

    def _still_reframing(self) -> bool:
        if self.jitter.frame_ticks == self._frame_ticks and not len(self._fifo):
            self._reframe = False  # the sender is back to 20 ms packets
        return self._reframe

    def pull(self) -> np.ndarray | None:
        if self._reframe and self._still_reframing():
            return self._pull_reframed()
        jb = self.jitter
        kind, payload = jb.get(self._clock())
        if kind == "frame":
            if jb.shed_wanted:
                if self._decode_level(payload) < QUIET_MS:
                    self._decode_level(jb.shed())  # quiet: drop the next one too (see pull_level)
                pcm = self.decoder.output()
            else:
                pcm = self.decoder.decode(payload)
            if len(pcm) != FRAME_SAMPLES:
                return self._spill(pcm)
            return pcm
        if kind == "lost":
            return self.decoder.conceal(FRAME_SAMPLES, payload)
        return None  # silence, DTX or nothing yet

    def pull_level(self) -> float | None:
        """The mixer's cheap path: advance one tick, return the frame's mean square.

        The frame is decoded at the codec's own rate only; :meth:`frame` makes the
        16 kHz version if this member is heard (``None``: silence, DTX, nothing yet).
        """
        if self._reframe and self._still_reframing():
            chunk = self._chunk = self._pull_reframed()
            if chunk is None:
                return None
            return mean_square(chunk)
        jb = self.jitter
        kind, payload = jb.get(self._clock())
        if kind == "frame":
            level = self._decode_level(payload)
            if level < QUIET_MS and jb.shed_wanted:
                # the buffer holds a frame more than it needs and this one is quiet: the
                # next frame goes too (decoded, so a stateful decoder keeps its state)
                level = self._decode_level(jb.shed())
            if self.decoder.packet_samples != FRAME_SAMPLES:  # not a 20 ms packet
                chunk = self._chunk = self._spill(self.decoder.output())
                return mean_square(chunk)  # type: ignore[arg-type]
            return level
        if kind == "lost":
            return self.decoder.conceal_level(FRAME_SAMPLES, payload)
        return None

    def frame(self) -> np.ndarray:
        """This tick's frame at 16 kHz (after :meth:`pull_level` returned a level)."""
        if self._reframe:
            return self._chunk  # type: ignore[return-value]
        return self.decoder.output()

    # -- mixer sink -------------------------------------------------------------
    def make_encoder(self) -> AudioEncoder:
        return AudioEncoder(self.tx.codec, in_rate=MIX_RATE, ptime_ms=self.tx_ptime_ms, bitrate=self.tx.bitrate_cap)

    def deliver(self, payload: bytes, timestamp_step: int) -> None:
        self._send(payload, self._tx_pt, timestamp_step)

    def close(self):
        """Stop the RTP session (releases its ports); returns its Deferred."""
        self.session.on_packet = None
        return self.session.close()
