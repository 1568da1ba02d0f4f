"""A WHIP/WHEP client's SDP offer, checked and narrowed before aiortc sees it.

:func:`prepare_offer` parses the offer with Cầu's own SDP parser (bounded: at
most 16 m= sections and 64 formats each, so a hostile offer costs little),
refuses what cannot work with a reason a person can act on (an audio or video
section without a codec in common refuses the whole offer, 406, naming what was
offered and what is taken), and keeps in each
m= section only the one codec the room will use in each direction (and its
RTX), in the offerer's order of preference:

* audio: Opus, else PCMU / PCMA (what aiortc carries and the room mixes);
* video: H.264 Constrained Baseline / Baseline with packetization-mode=1 (the
  only H.264 aiortc speaks; Safari and the hardware decoders of phones want it),
  or VP8.

It also drops an ``a=end-of-candidates`` that comes with no candidates at all:
an OBS-shaped client gathers only after the answer and is found by its
connectivity checks (peer-reflexive candidates), but aioice gives up at once
when told the remote list is complete and empty.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.sdp import is_number, MediaDescription, SdpError, SessionDescription

#: what a browser leg may carry, by rtpmap encoding name (lower case)
AUDIO_CODECS = ("opus", "pcmu", "pcma")
#: candidates an offer may carry (a client has a handful; each costs connectivity checks)
MAX_OFFER_CANDIDATES = 64
VIDEO_CODECS = ("h264", "vp8")


class OfferError(Exception):
    """The offer cannot be answered: ``status`` for the HTTP answer, ``reason`` for a person."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class OfferedStream:
    mid: str
    kind: str
    direction: str          # the offerer's: "sendonly" (publisher), "recvonly" (viewer), "sendrecv"
    payload_type: int
    encoding: str           # rtpmap encoding name as offered


@dataclass(frozen=True)
class PreparedOffer:
    sdp: str
    streams: tuple[OfferedStream, ...]
    candidates: int


def _h264_ok(fmtp: dict[str, str]) -> bool:
    if fmtp.get("packetization-mode", "0").strip() != "1":
        return False
    plid = fmtp.get("profile-level-id", "42e01f").strip().lower()
    # Constrained Baseline (42e0 / 42c0 / 4240 …) or Baseline (4200): profile_idc 0x42
    return len(plid) == 6 and plid.startswith("42") and all(c in "0123456789abcdef" for c in plid)


def _choose(m: MediaDescription) -> int | None:
    table = m.rtpmap
    wanted = AUDIO_CODECS if m.media == "audio" else VIDEO_CODECS
    for pt in m.payload_types:
        rm = table.get(pt)
        name = rm.encoding.lower() if rm is not None else {0: "pcmu", 8: "pcma"}.get(pt, "")
        if name not in wanted:
            continue
        if name == "h264" and not _h264_ok(m.fmtp_params(pt)):
            continue
        if name == "opus" and (rm is None or rm.clock_rate != 48000):
            continue
        return pt
    return None


def _offered_names(m: MediaDescription) -> list[str]:
    table = m.rtpmap
    names = []
    for pt in m.payload_types:
        rm = table.get(pt)
        n = rm.encoding if rm is not None else str(pt)
        if n.lower() not in ("rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "cn") and n not in names:
            names.append(n)
    return names[:12]


def prepare_offer(text: str | bytes) -> PreparedOffer:
    """Check and narrow an offer (see the module docstring); :class:`OfferError` when it cannot work."""
    try:
        sd = SessionDescription.parse(text)
    except SdpError as exc:
        raise OfferError(400, f"the SDP offer is malformed: {exc.reason}") from None
    if not sd.attr("fingerprint") and not any(m.attr("fingerprint") for m in sd.media):
        raise OfferError(400, "the SDP offer has no a=fingerprint: WebRTC media must be DTLS-SRTP")
    streams: list[OfferedStream] = []
    refused: list[str] = []
    candidates = 0
    for index, m in enumerate(sd.media):
        candidates += len(m.attrs("candidate"))
        if m.media not in ("audio", "video") or m.port == 0:
            continue
        if "SAVPF" not in m.proto.upper() and "SAVP" not in m.proto.upper():
            raise OfferError(400, f"m={m.media} uses {m.proto}; WebRTC media is UDP/TLS/RTP/SAVPF")
        mid = m.attr("mid")
        if not mid:
            raise OfferError(400, f"m={m.media} (section {index + 1}) has no a=mid")
        chosen = _choose(m)
        if chosen is None:
            refused.append(f"{m.media}: offered {', '.join(_offered_names(m)) or 'nothing'}; "
                           f"this gateway takes {' or '.join(n.upper() if n != 'opus' else 'Opus' for n in (AUDIO_CODECS if m.media == 'audio' else ('h264', 'vp8')))}"
                           + (" (H.264 with packetization-mode=1, Baseline profile)" if m.media == "video" else ""))
            continue
        keep = {chosen}
        table = m.rtpmap
        for pt in m.payload_types:
            rm = table.get(pt)
            if rm is not None and rm.encoding.lower() == "rtx" and m.fmtp_params(pt).get("apt", "").strip() == str(chosen):
                keep.add(pt)
        m.formats = [f for f in m.formats if is_number(f) and int(f) in keep]
        m.attributes = [(k, v) for k, v in m.attributes
                        if k not in ("rtpmap", "fmtp", "rtcp-fb") or _pt_of(v) in keep or _pt_of(v) is None]
        rm = table.get(chosen)
        streams.append(OfferedStream(mid, m.media, sd.direction_of(m), chosen,
                                     rm.encoding if rm is not None else {0: "PCMU", 8: "PCMA"}.get(chosen, "")))
    if refused:
        raise OfferError(406, "no common codec: " + "; ".join(refused))
    kinds = [st.kind for st in streams]
    if kinds.count("audio") > 1 or kinds.count("video") > 1:
        raise OfferError(400, f"the offer has {kinds.count('audio')} audio and {kinds.count('video')} video "
                              "sections; a participant sends at most one of each")
    if candidates > MAX_OFFER_CANDIDATES:
        raise OfferError(400, f"the offer lists {candidates} candidates; at most {MAX_OFFER_CANDIDATES} are taken")
    if not streams:
        raise OfferError(400, "the SDP offer has no audio or video m= section")
    if candidates == 0:
        sd.attributes = [(k, v) for k, v in sd.attributes if k != "end-of-candidates"]
        for m in sd.media:
            m.attributes = [(k, v) for k, v in m.attributes if k != "end-of-candidates"]
    return PreparedOffer(sd.serialize(), tuple(streams), candidates)


def candidate_fields(text: str) -> list[str] | None:
    """The fields of an ICE candidate (RFC 8839 §5.1, the text after ``a=candidate:``) when it has
    the shape ``foundation component transport priority address port typ TYPE …``, else None."""
    f = text.split()
    if len(f) < 8 or f[6] != "typ" or not (is_number(f[1]) and is_number(f[3]) and is_number(f[5])):
        return None
    return f


def _pt_of(value: str | None) -> int | None:
    if not value:
        return None
    head = value.split(None, 1)[0]
    if head == "*":
        return None
    return int(head) if is_number(head) else -1
