"""The PIN gate: a caller to a room with a PIN waits here, hears a prompt and keys the PIN.

Protocol-agnostic: it only needs a Leg whose audio sink can encode and send,
and ``dtmf`` events on the Leg (RFC 4733, SIP INFO and H.245
userInputIndication all arrive as those). The prompts are tone sequences
generated here, so nothing has to be recorded or shipped:

- *enter your PIN*: a rising two-note chime (523 Hz then 784 Hz), repeated every 4 s;
- *wrong PIN*: three short low beeps (330 Hz);
- *welcome*: three rising notes (523, 659, 784 Hz), then the caller joins the room.

Digits: the PIN, then ``#`` (or just the PIN's length in digits); ``*`` starts
over. Three wrong tries, or no right PIN within the time limit, and the caller
is hung up with the reason.

Guessing is slowed and stopped by the registry's PIN guard
(:class:`gateway.guard.FailureGuard`): every wrong PIN is counted against the
caller's address and the room; after a wrong PIN the digits keyed during the
next n seconds are ignored (n = the address's recent failures, 1 to 5: the
wrong-PIN beeps last one); a source or room that the guard locks is hung up
at once ("too many wrong PINs"), and the guard's lockout doubles each time
guessing resumes.
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Callable

import numpy as np

from gateway.conference.leg import Leg

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

RATE = 16000
FRAME = RATE // 50  # 20 ms


def _note(freq: float, ms: int, level_dbfs: float = -14.0) -> np.ndarray:
    n = RATE * ms // 1000
    t = np.arange(n) / RATE
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms ramps: no clicks
    return (32767 * 10 ** (level_dbfs / 20) * env * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def _seq(*parts: np.ndarray) -> np.ndarray:
    pcm = np.concatenate(parts)
    pad = (-len(pcm)) % FRAME
    return np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])


PROMPT_ENTER = _seq(_note(523, 250), _note(784, 350), _silence(3400))
PROMPT_WRONG = _seq(*(p for _ in range(3) for p in (_note(330, 120), _silence(80))), _silence(400))
PROMPT_WELCOME = _seq(_note(523, 150), _note(659, 150), _note(784, 250), _silence(100))


class PinGate:
    def __init__(
        self,
        leg: Leg,
        pin: str,
        clock: Any,
        on_admit: Callable[[Leg], None],
        tries: int = 3,
        time_limit: float = 60.0,
        reactor: Any = None,
        *,
        guard: Any = None,
        source: str = "",
        room_id: str = "",
    ):
        if reactor is None:
            from twisted.internet import reactor as _r

            reactor = _r
        audio = leg.audio
        if audio is None or audio.source is None or audio.sink is None:
            raise ValueError("a PIN gate needs a leg with audio")
        self.leg = leg
        self.pin = pin
        self.guard = guard
        self.source = source or leg.remote
        self.room_id = room_id
        #: called once when the gate is done (admitted, failed or hung up)
        self.on_done: Callable[[], None] | None = None
        self._reactor = reactor
        self._deaf_until = 0.0
        self.clock = clock
        self.on_admit = on_admit
        self.tries_left = tries
        self.digits = ""
        self.done = False
        self.audio_source, self.sink = audio.source, audio.sink
        self.encoder = self.sink.make_encoder()
        self.step = self.encoder.samples_per_packet_rtp
        self._playing = PROMPT_ENTER
        self._pos = 0
        self._loop_prompt = True
        self._after_prompt: Callable[[], None] | None = None
        self._unsub = leg.on("dtmf", self._on_digit)
        self._unsub_hangup = leg.on("hangup", lambda reason: self._stop())
        self._timer = reactor.callLater(time_limit, self._fail, f"no PIN entered within {time_limit:g} s")
        clock.subscribe(self._tick)

    def _tick(self) -> None:
        self.audio_source.pull()  # keep the jitter buffer draining while the caller waits
        if self._playing is None:
            frame = np.zeros(FRAME, dtype=np.int16)
        else:
            frame = self._playing[self._pos:self._pos + FRAME]
            self._pos += FRAME
            if self._pos >= len(self._playing):
                self._pos = 0
                if not self._loop_prompt:
                    self._playing = PROMPT_ENTER if self._after_prompt is None else None
                    self._loop_prompt = True
                    then, self._after_prompt = self._after_prompt, None
                    if then is not None:
                        then()
                        return
        payload = self.encoder.encode(frame)
        if payload:
            self.sink.deliver(payload, self.step)

    def _play_once(self, pcm: np.ndarray, then: Callable[[], None] | None = None) -> None:
        self._playing, self._pos, self._loop_prompt, self._after_prompt = pcm, 0, False, then

    def _on_digit(self, digit: str) -> None:
        if self.done or self._reactor.seconds() < self._deaf_until:
            return
        if digit == "*":
            self.digits = ""
            return
        if digit != "#":
            self.digits += digit
            if len(self.digits) < len(self.pin):
                return
        entered, self.digits = self.digits, ""
        if self.guard is not None and self.guard.refused(self.source, self.room_id):
            # locked out meanwhile (by this caller's other calls, or guesses at this room): the
            # right PIN does not help now
            self.done = True
            self._play_once(PROMPT_WRONG, lambda: self._fail("too many wrong PINs"))
            return
        if hmac.compare_digest(entered.encode(), self.pin.encode()):
            log.info("leg %s entered the right PIN", self.leg.id)
            if self.guard is not None:
                self.guard.succeeded(self.source, self.room_id)
            self.done = True
            self._play_once(PROMPT_WELCOME, self._admit)
            return
        self.tries_left -= 1
        log.info("leg %s from %s entered a wrong PIN for %s (%d tries left)", self.leg.id, self.source,
                 self.room_id, self.tries_left)
        if self.guard is not None:
            self.guard.failed(self.source, self.room_id)
            if self.guard.refused(self.source, self.room_id):
                self.done = True
                self._play_once(PROMPT_WRONG, lambda: self._fail("too many wrong PINs"))
                return
            self._deaf_until = self._reactor.seconds() + max(1, min(5, self.guard.failures(self.source)))
        if self.tries_left <= 0:
            self.done = True
            self._play_once(PROMPT_WRONG, lambda: self._fail("wrong PIN entered 3 times"))
        else:
            self._play_once(PROMPT_WRONG)

    def _admit(self) -> None:
        self._stop()
        self.on_admit(self.leg)

    def _fail(self, reason: str) -> None:
        self._stop()
        self.leg.hangup(reason)

    def _stop(self) -> None:
        if self.on_done is not None:
            done, self.on_done = self.on_done, None
            done()
        self.done = True
        self.clock.unsubscribe(self._tick)
        self._unsub()
        self._unsub_hangup()
        if self._timer.active():
            self._timer.cancel()
