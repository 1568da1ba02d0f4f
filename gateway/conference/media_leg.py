"""Build a Leg around negotiated RTP audio: the glue every adapter (SIP, H.323) and test harness shares.

An adapter negotiates (SDP offer/answer, H.245 logical channels), opens an
:class:`~gateway.media.rtp.RtpSession` and calls :func:`rtp_audio_leg`. The
result is an ordinary :class:`Leg`: DTMF digits arrive as ``dtmf`` events, an
RTP timeout hangs the leg up (the room then removes it), and hanging up closes
the RTP session so its ports go back to the allocator.
"""
from __future__ import annotations

from gateway.conference.leg import Leg, NegotiatedCodec
from gateway.media.audio_stream import AudioFormat, AudioStream
from gateway.media.rtp import RtpSession


def _negotiated(fmt: AudioFormat) -> NegotiatedCodec:
    return NegotiatedCodec(fmt.codec.name, fmt.payload_type, fmt.codec.clock_rate, dict(fmt.codec.fmtp))


def rtp_audio_leg(
    session: RtpSession,
    rx: AudioFormat,
    tx: AudioFormat | None = None,
    *,
    dtmf_pt: int | None = None,
    display_name: str = "",
    protocol: str = "rtp",
    remote: str = "",
    leg_id: str | None = None,
) -> Leg:
    """A Leg whose audio is ``session`` (receiving ``rx``, sending ``tx``, default the same)."""
    tx = tx or rx
    stream = AudioStream(session, rx, tx, dtmf_pt=dtmf_pt)
    leg = Leg(
        leg_id, display_name, protocol, remote,
        audio_rx=_negotiated(rx), audio_tx=_negotiated(tx), audio=(stream, stream),
    )
    leg.media = stream  # type: ignore[attr-defined]  (adapters reach the stream for stats)
    stream.on_dtmf = lambda digit: leg.emit("dtmf", digit=digit)
    session.on_timeout = lambda: leg.hangup(f"no media received for {session.timeout:g} s")
    leg.on("hangup", lambda reason: stream.close())
    return leg
