"""RFC 3264 offer/answer for RTP audio and video, driven by the codec catalogue and a room's policy.

:class:`OfferAnswer` answers offers from SIP endpoints, makes our own offers
(dial-out, a late-offer INVITE answered in the 200 OK, re-INVITE hold/resume)
and checks the answers to them.  Every codec fact (names, clock rates, static
payload types, fmtp we offer, what an absent fmtp parameter means) comes from
:mod:`gateway.catalogue`; fmtp text is translated to and from typed parameters,
and offers are answered, by the codec modules (:mod:`gateway.media.codecs`:
the same rules serve H.245). Each accepted ``m=`` line comes to an
:class:`SdpStream` with one :class:`~gateway.media.codecs.MediaFormat` per
direction. In short:

* **choice** — the *offerer's* order wins: the first offered format that the
  catalogue knows, the room allows and whose parameters we can meet is taken,
  one codec per stream (plus telephone-event).  RFC 3264 §6.1 leaves the choice
  to the answerer; following the offerer's preference is what SIP stacks do in
  practice and what users expect (the phone's "preferred codec" setting works).
* **payload types** are answered with the offerer's numbers: dynamic ones are
  matched by ``a=rtpmap`` encoding/clock (channels for audio), static ones by
  number when there is no rtpmap (RFC 3264 §6.1, RFC 3551).
* **H.264** (RFC 6184 §8.1, §8.2.2) — packetization-mode must match (absent =
  0, a distinct configuration); the profile (profile_idc + profile-iop) is
  echoed; Baseline, Constrained Baseline, Main, Extended and High offers are
  accepted because our encoder sends Constrained Baseline, which conforms to all
  of them, and our decoder decodes them; the answered level is the lower of the
  offer's and ours (our catalogue level, capped by the room's max_resolution);
  when we can receive more than that level, ``max-fs``/``max-mbps`` say so.
  The offerer's ``max-fs``/``max-mbps``/``max-br`` are in the send format's
  :class:`~gateway.media.codecs.h264.H264Params` for the encoder to honour.
* **H.263 / H263-1998** (RFC 4629 §8.1) — the picture sizes both sides support,
  MPI the slower of the two; none given means QCIF (every H.263 decoder
  supports QCIF); annex flags are not answered (we use none).
* **opus** (RFC 7587 §7) — always ``opus/48000/2``; we answer ``useinbandfec=1``.
* **rtcp-fb** (RFC 4585) — ``nack``, ``nack pli``, ``ccm fir`` answered only where offered.
* **bandwidth** — ``b=AS``/``b=TIAS`` (RFC 3890) answered with min(ours, theirs).
* **direction** (RFC 3264 §6.1) — the mirror of the offer's, limited by what we
  want; ``c=0.0.0.0`` (RFC 2543 hold, RFC 3264 §8.4) means we never send, and
  with no direction attribute it means the old "hold": inactive.
* only the first usable audio and the first usable video stream are accepted;
  further ones, ``application`` (BFCP, H.224 far-end camera control), ``image``
  (T.38) and any other media get port 0; when nothing is left the offer is refused with 488.
* **SRTP** (RTP/SAVP(F) with SDES ``a=crypto``, RFC 4568; ``gateway.media.srtp``): taken when
  the signalling is protected (``secure_signalling``: SIP over TLS) and the room's
  ``encryption`` is not ``off``; we answer the offerer's first usable suite with our own key.
  ``encryption: required`` refuses plain RTP/AVP streams; DTLS-SRTP (UDP/TLS/...) belongs to
  the browsers' side.
"""
from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.catalogue import Catalogue, Codec
from gateway.conference.rtp_media import FEEDBACK, StreamPlan
from gateway.media.codecs import Limits, MediaFormat, NoMatch, rules_for
from gateway.media.codecs import lower_keys as _lower
from gateway.media.srtp import CryptoAttribute, SUITES, choose_crypto, new_crypto, parse_crypto

from .sdp import (
    DIRECTIONS,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    format_fmtp,
)

__all__ = [
    "LocalMedia",
    "OfferAnswer",
    "SdpStream",
]

# RFC 3551 §6 static payload types, for naming what was offered in reasons only.
_STATIC_NAMES = {
    0: "PCMU", 3: "GSM", 4: "G723", 5: "DVI4/8000", 6: "DVI4/16000", 7: "LPC", 8: "PCMA", 9: "G722",
    10: "L16/44100/2", 11: "L16/44100", 12: "QCELP", 13: "CN", 14: "MPA", 15: "G728", 16: "DVI4/11025",
    17: "DVI4/22050", 18: "G729", 25: "CelB", 26: "JPEG", 28: "nv", 31: "H261", 32: "MPV", 33: "MP2T",
    34: "H263",
}
_PLAIN_RTP = ("RTP/AVP", "RTP/AVPF")
_SRTP = ("RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
_RTP_MEDIA = ("audio", "video")
_FEEDBACK = FEEDBACK                                # RFC 4585 / RFC 5104 messages we act on
_DYNAMIC_FIRST = 96
_DEFAULT_AUDIO_ORDER = ("opus", "G722", "PCMU", "PCMA")
_DEFAULT_VIDEO_ORDER = ("H264", "VP8", "H263-1998", "H263", "H261")

# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class LocalMedia:
    """Our RTP ports and the host the peer should send to."""

    audio_port: int
    video_port: int | None = None
    address: str = "0.0.0.0"


@dataclass
class SdpStream:
    """What one ``m=`` line came to.  ``rx`` is what we receive (our payload type, the
    parameters we answered or offered), ``tx`` what we send (the far end's payload type and
    receive parameters, which the encoder honours)."""

    media: str
    index: int
    accepted: bool
    rx: MediaFormat | None = None
    tx: MediaFormat | None = None
    dtmf_rx_pt: int | None = None         # telephone-event: our payload type
    dtmf_tx_pt: int | None = None         # ... and theirs
    remote_host: str = ""
    remote_port: int = 0
    remote_rtcp_port: int = 0
    direction: str = "inactive"
    remote_ptime: int | None = None       # the far end's a=ptime (a preference: we send 20 ms)
    maxptime: int | None = None
    bandwidth_kbps: int | None = None     # the far end's b=AS/TIAS for this stream
    rtcp_fb: list[str] = field(default_factory=list)
    proto: str = "RTP/AVP"
    reason: str | None = None             # why a stream was rejected
    srtp: tuple[str, bytes, bytes] | None = None   # SDES (RFC 4568): suite, our key, the far end's key

    @property
    def codec(self) -> Codec | None:
        return self.tx.codec if self.tx is not None else None

    @property
    def sends(self) -> bool:
        return self.accepted and self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.accepted and self.direction in ("sendrecv", "recvonly")

    def plan(self, fallback_host: str = "") -> StreamPlan:
        """The protocol-neutral description :class:`~gateway.conference.rtp_media.RtpMedia` takes.
        ``fallback_host`` replaces an unspecified c= address (0.0.0.0 / ::)."""
        host = self.remote_host if self.remote_host not in ("0.0.0.0", "::", "") else fallback_host
        return StreamPlan(self.media, self.rx, self.tx, self.direction,
                          (host, self.remote_port) if self.remote_port else None,
                          self.remote_rtcp_port or None, self.dtmf_rx_pt, self.dtmf_tx_pt,
                          frozenset(self.rtcp_fb), self.srtp)


def _audio_ptime(codec: Codec) -> int | None:
    # 20 ms both ways: our SDP says a=ptime:20 (what we want to receive) and the mixer makes 20 ms
    # frames; the far end's a=ptime is a preference we may send differently from (RFC 4566)
    return 20 if codec.media == "audio" else None


# --------------------------------------------------------------------------- the negotiator

class OfferAnswer:
    """Offers and answers for one room's policy (``RoomSpec`` fields), from the catalogue."""

    def __init__(
        self,
        catalogue: Catalogue,
        audio_codecs: Sequence[str] = (),
        video_codecs: Sequence[str] = (),
        max_resolution: tuple[int, int] | None = None,
        max_bitrate_kbps: int | None = None,
        dtmf: bool = True,
        session_name: str = "Cau",
        encryption: str = "preferred",
    ) -> None:
        self.catalogue = catalogue
        self.max_resolution = max_resolution
        self.max_bitrate_kbps = max_bitrate_kbps
        self.session_name = session_name
        self.audio = self._policy(audio_codecs, "audio", _DEFAULT_AUDIO_ORDER)
        self.video = self._policy(video_codecs, "video", _DEFAULT_VIDEO_ORDER)
        self.dtmf_codec: Codec | None = None
        if dtmf and "telephone-event" in catalogue:
            self.dtmf_codec = catalogue.get("telephone-event")
        self.limits = Limits(max_resolution, max_bitrate_kbps)
        #: the room's media encryption policy (required | preferred | off) and whether this
        #: dialog's signalling is protected (SIP over TLS): SDES keys are taken only then
        self.encryption = encryption
        self.secure_signalling = False
        #: the SDES keys of our last offer, by m= line index
        self._offered_keys: dict[int, list[CryptoAttribute]] = {}

    @classmethod
    def for_room(cls, catalogue: Catalogue, room: object, dtmf: bool = True,
                 session_name: str = "Cau") -> OfferAnswer:
        """The negotiator for a dial plan ``RoomSpec`` (its codec lists, max_resolution, max_bitrate_kbps)."""
        return cls(catalogue, audio_codecs=getattr(room, "audio_codecs", ()),
                   video_codecs=getattr(room, "video_codecs", ()),
                   max_resolution=getattr(room, "max_resolution", None),
                   max_bitrate_kbps=getattr(room, "max_bitrate_kbps", None),
                   dtmf=dtmf, session_name=session_name, encryption=getattr(room, "encryption", "preferred"))

    # ---- policy
    def _find(self, name: str) -> Codec | None:
        return self.catalogue.get(name) if name in self.catalogue else None

    def _policy(self, names: Sequence[str], media: str, default_order: Sequence[str]) -> list[Codec]:
        """Allowed codecs in preference order (the room's order, else ours)."""
        if names:
            out: list[Codec] = []
            for n in names:
                c = self.catalogue.get(n)        # KeyError names the known codecs
                if c.media != media:
                    raise ValueError(f"{c.name} is a {c.media} codec, not {media}")
                if c.name != "telephone-event" and c not in out:
                    out.append(c)
            return out
        every = [c for c in self.catalogue if c.media == media and c.name != "telephone-event"]
        ranked = [c for n in default_order for c in every if c.name.lower() == n.lower()]
        return ranked + [c for c in every if c not in ranked]

    def allowed_names(self) -> list[str]:
        return [c.name for c in self.audio + self.video]

    # ---- identification of offered formats
    def _identify(self, m: MediaDescription, pt: int) -> Codec | None:
        rm = m.rtpmap.get(pt)
        if rm is not None:
            ch = rm.channels if m.media == "audio" else None
            c = self.catalogue.find(rm.encoding, rm.clock_rate, ch)
            if c is None and rm.encoding.lower() == "opus":
                c = self.catalogue.find(rm.encoding, rm.clock_rate, None)     # "opus/48000" without /2
            if c is None and pt < _DYNAMIC_FIRST:
                static = self.catalogue.by_static_pt(pt)                       # "G722/16000" on PT 9
                if static is not None and static.encoding_name.lower() == rm.encoding.lower():
                    c = static
            return c if c is not None and c.media == m.media else None
        if pt < _DYNAMIC_FIRST:
            c = self.catalogue.by_static_pt(pt)
            return c if c is not None and c.media == m.media else None
        return None

    @staticmethod
    def _format_name(m: MediaDescription, pt: int) -> str:
        rm = m.rtpmap.get(pt)
        if rm is not None:
            return str(rm)
        return _STATIC_NAMES.get(pt, f"payload type {pt}")

    # ---- codec-specific parameter matching (the codec modules' rules)
    def _match_params(self, codec: Codec, offered: Mapping[str, str]) -> tuple[Any, Any]:
        """(params we answer, params the far end receives with) for an offered format."""
        rules = rules_for(codec)
        return rules.answer(codec, rules.from_fmtp(codec, offered), self.limits)

    # ---- answering
    def answer(
        self,
        offer: SessionDescription,
        local: LocalMedia,
        direction: str = "sendrecv",
        previous: SessionDescription | None = None,
    ) -> tuple[SessionDescription, list[SdpStream]]:
        """Answer ``offer`` (RFC 3264 §6).  ``direction`` is what we want (``sendonly`` when
        we hold the peer); ``previous`` is the last SDP we sent in this dialog, whose o=
        line is kept (version bumped only when the SDP changed, RFC 3264 §8).

        Raises :class:`SdpError` status 488 when no stream can be accepted."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        if not offer.media:
            raise SdpError("the offer has no media streams (m= lines)", status=488)
        answer = self._new_session(local, previous)
        streams: list[SdpStream] = []
        taken: set[str] = set()
        offered_names: list[str] = []
        problems: list[str] = []
        srtp_refused = False
        srtp_reason: str | None = None
        for index, m in enumerate(offer.media):
            ans_m, stream, names, why = self._answer_media(offer, index, m, local, direction, taken)
            for n in names:
                if n not in offered_names:
                    offered_names.append(n)
            if why and why not in problems:
                problems.append(why)
            if stream.accepted:
                taken.add(m.media)
            elif m.proto.upper() in _SRTP or (self.encryption == "required" and m.media in _RTP_MEDIA):
                srtp_refused = True
                srtp_reason = srtp_reason or stream.reason
            answer.media.append(ans_m)
            streams.append(stream)
        if not any(s.accepted for s in streams):
            if srtp_refused and srtp_reason:
                raise SdpError(srtp_reason, status=488)
            offered = _listing(offered_names) or "nothing usable"
            detail = f" ({_listing(problems, sep='; ', width=80)})" if problems else ""
            raise SdpError(f"no common codec: offered {offered}; room allows "
                           f"{', '.join(self.allowed_names()) or 'nothing'}{detail}", status=488)
        return self._continue_origin(answer, previous), streams

    def _rejected(self, m: MediaDescription, index: int, reason: str) -> tuple[MediaDescription, SdpStream]:
        ans = MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"])
        return ans, SdpStream(media=m.media, index=index, accepted=False, proto=m.proto, reason=reason)

    def _answer_media(
        self, offer: SessionDescription, index: int, m: MediaDescription, local: LocalMedia,
        want: str, taken: set[str],
    ) -> tuple[MediaDescription, SdpStream, list[str], str | None]:
        """One m= line → (answer m=, stream, names of offered formats, why nothing matched)."""
        if m.port == 0:
            a, s = self._rejected(m, index, "disabled by the offerer (port 0)")
            return a, s, [], None
        if m.media not in _RTP_MEDIA:
            a, s = self._rejected(m, index, f"{m.media} streams ({m.proto}) are not supported")
            return a, s, [], None
        proto = m.proto.upper()
        offered_key = None
        if proto in _SRTP:
            if proto.startswith("UDP/TLS"):
                a, s = self._rejected(m, index, f"DTLS-SRTP ({m.proto}) is for browsers: join from the web page "
                                                "(WHIP); SIP devices use SDES (RTP/SAVP with a=crypto) over TLS")
                return a, s, [], None
            if self.encryption == "off":
                a, s = self._rejected(m, index, "this room takes no encrypted media (encryption: off)")
                return a, s, [], None
            if not self.secure_signalling:
                a, s = self._rejected(m, index, "SRTP keys (a=crypto) are taken only over SIP TLS "
                                                "(sips: or transport=tls): they would travel in the clear")
                return a, s, [], None
            offered_key = choose_crypto(m.attrs("crypto"))
            if offered_key is None:
                a, s = self._rejected(m, index, "no usable a=crypto (AES_CM_128_HMAC_SHA1_80 or _32, "
                                                "inline key, no MKI)")
                return a, s, [], None
        elif proto in _PLAIN_RTP and self.encryption == "required" and m.media in _RTP_MEDIA:
            a, s = self._rejected(m, index, "this room needs encrypted media: call over SIP TLS with SRTP "
                                            "(RTP/SAVP and a=crypto)")
            return a, s, [], None
        elif proto not in _PLAIN_RTP:
            a, s = self._rejected(m, index, f"transport {m.proto} is not supported (RTP/AVP or RTP/AVPF)")
            return a, s, [], None
        if m.media in taken:
            a, s = self._rejected(m, index, f"only one {m.media} stream is supported")
            return a, s, [], None
        port = local.audio_port if m.media == "audio" else local.video_port
        if not port:
            a, s = self._rejected(m, index, f"no local {m.media} port")
            return a, s, [], None
        conn = offer.connection_of(m)
        if conn is None:
            raise SdpError(f"m= #{index + 1} ({m.media}) has no c= line and there is no session-level one")

        allowed = self.audio if m.media == "audio" else self.video
        names: list[str] = []
        reasons: list[str] = []
        chosen: tuple[int, Codec, Any, Any] | None = None
        dtmf: tuple[int, Codec] | None = None
        for pt in m.payload_types:
            codec = self._identify(m, pt)
            label = codec.name if codec is not None else self._format_name(m, pt)
            if label not in names:
                names.append(label)
            if codec is None:
                continue
            if codec.name == "telephone-event":
                if self.dtmf_codec is not None and dtmf is None:
                    dtmf = (pt, codec)
                continue
            if chosen is not None or codec not in allowed:
                continue
            try:
                ans_params, send_params = self._match_params(codec, m.fmtp_params(pt))
            except NoMatch as exc:
                reasons.append(exc.reason)
                continue
            chosen = (pt, codec, ans_params, send_params)
        if chosen is None:
            why = "; ".join(reasons) if reasons else None
            a, s = self._rejected(m, index, f"no common {m.media} codec" + (f": {why}" if why else ""))
            return a, s, names, why
        pt, codec, ans_params, send_params = chosen
        ans_fmtp = rules_for(codec).to_fmtp(ans_params)

        # direction (RFC 3264 §6.1, §8.4)
        remote_dir = offer.direction_of(m)
        our = _mirror(remote_dir)
        if conn.is_hold:
            our = "inactive" if m.explicit_direction is None and remote_dir == "sendrecv" else _without_send(our)
        our = _intersect(our, want)

        ans = MediaDescription(media=m.media, port=port, proto=m.proto, formats=[str(pt)])
        ans.add("rtpmap", f"{pt} {codec.rtpmap()}")
        srtp = None
        if offered_key is not None:
            ours = new_crypto(offered_key.tag, offered_key.suite)
            ans.add("crypto", ours.value())
            srtp = (ours.suite, ours.key, offered_key.key)
        if ans_fmtp:
            ans.add("fmtp", f"{pt} {format_fmtp(ans_fmtp, codec.encoding_name)}")
        rtcp_fb: list[str] = []
        if m.media == "video":
            for fb in m.rtcp_fb_for(pt):
                if fb.lower() in _FEEDBACK and fb.lower() not in rtcp_fb:
                    rtcp_fb.append(fb.lower())
                    ans.add("rtcp-fb", f"{pt} {fb.lower()}")
        dtmf_pt = None
        if dtmf is not None and m.media == "audio":
            dtmf_pt = dtmf[0]
            ans.formats.append(str(dtmf_pt))
            ans.add("rtpmap", f"{dtmf_pt} {dtmf[1].rtpmap()}")
            events = dtmf[1].fmtp
            if events:
                ans.add("fmtp", f"{dtmf_pt} {format_fmtp(events, dtmf[1].encoding_name)}")
        if m.media == "audio" and codec.ptime_ms:
            ans.add("ptime", str(codec.ptime_ms))
        remote_kbps = _remote_kbps(offer, m)
        ours_kbps = self.max_bitrate_kbps if m.media == "video" else None
        as_value = _min_present(ours_kbps, m.bandwidth.get("AS"))
        if as_value is not None:
            ans.bandwidth["AS"] = as_value
        if "TIAS" in m.bandwidth:
            ans.bandwidth["TIAS"] = _min_present(ours_kbps * 1000 if ours_kbps else None, m.bandwidth["TIAS"]) or 0
        ans.set_direction(our)

        video = m.media == "video"
        stream = SdpStream(
            media=m.media, index=index, accepted=True,
            rx=MediaFormat(codec, pt, ans_params, _audio_ptime(codec),
                           ours_kbps * 1000 if video and ours_kbps else None),
            tx=MediaFormat(codec, pt, send_params, _audio_ptime(codec),
                           remote_kbps * 1000 if video and remote_kbps else None),
            dtmf_rx_pt=dtmf_pt, dtmf_tx_pt=dtmf_pt,
            remote_host=conn.address, remote_port=m.port, remote_rtcp_port=_rtcp_port(m),
            direction=our, remote_ptime=m.ptime, maxptime=m.maxptime, bandwidth_kbps=remote_kbps,
            rtcp_fb=rtcp_fb, proto=m.proto, srtp=srtp,
        )
        return ans, stream, names, None

    # ---- offering
    def offers_srtp(self) -> bool:
        """Do our offers carry SDES keys? Over protected signalling, unless the room says ``off``."""
        return self.secure_signalling and self.encryption != "off"

    def offer(self, local: LocalMedia, video: bool = True, direction: str = "sendrecv",
              srtp: bool | None = None) -> SessionDescription:
        """Our offer: audio with every allowed codec and telephone-event, video (when ``video``
        and a video port) with H264 (mode 1 and mode 0), VP8, H263-1998, H263 as allowed.
        ``srtp`` (default :meth:`offers_srtp`): RTP/SAVP streams with an a=crypto line per suite,
        a fresh key for each (RFC 4568 §5.1)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        if srtp is None:
            srtp = self.offers_srtp()
        if srtp and not self.secure_signalling:
            raise SdpError("SRTP keys are offered only over SIP TLS", status=488)
        self._offered_keys = {}
        sd = self._new_session(local, None)
        next_pt = [_DYNAMIC_FIRST]

        def dynamic() -> int:
            pt = next_pt[0]
            next_pt[0] += 1
            return pt

        audio = MediaDescription(media="audio", port=local.audio_port, proto="RTP/AVP", formats=[])
        for codec in self.audio:
            self._offer_format(audio, codec, codec.static_pt if codec.static_pt is not None else dynamic(),
                               rules_for(codec).to_fmtp(rules_for(codec).local(codec, self.limits)[0]))
        if self.dtmf_codec is not None:
            self._offer_format(audio, self.dtmf_codec, dynamic(), self.dtmf_codec.fmtp)
        ptime = min((c.ptime_ms for c in self.audio if c.ptime_ms), default=None)
        if ptime:
            audio.add("ptime", str(ptime))
        audio.set_direction(direction)
        sd.media.append(audio)
        if srtp:
            self._offer_keys(audio, 0)
        if video and local.video_port and self.video:
            vm = MediaDescription(media="video", port=local.video_port, proto="RTP/AVP", formats=[])
            for codec in self.video:
                for fm in self._offer_video_fmtps(codec):
                    pt = codec.static_pt if codec.static_pt is not None else dynamic()
                    self._offer_format(vm, codec, pt, fm)
            for fb in _FEEDBACK:
                vm.add("rtcp-fb", f"* {fb}")
            kbps = self.max_bitrate_kbps or max(c.bitrate_kbps for c in self.video)
            vm.bandwidth["AS"] = kbps
            vm.set_direction(direction)
            sd.media.append(vm)
            if srtp:
                self._offer_keys(vm, len(sd.media) - 1)
        return sd

    def _offer_keys(self, m: MediaDescription, index: int) -> None:
        m.proto = "RTP/SAVP"
        keys = [new_crypto(tag, suite) for tag, suite in enumerate(SUITES, start=1)]
        for key in keys:
            m.add("crypto", key.value())
        self._offered_keys[index] = keys

    def _answered_srtp(self, index: int, om: MediaDescription,
                       am: MediaDescription) -> tuple[str, bytes, bytes] | None:
        """The SDES pair of an answered RTP/SAVP stream: the answer's a=crypto must carry the tag
        and suite of one of our lines (RFC 4568 §5.1.3), with its own key."""
        if om.proto.upper() not in _SRTP:
            return None
        ours = {k.tag: k for k in self._offered_keys.get(index, [])}
        for value in am.attrs("crypto"):
            theirs = parse_crypto(value)
            if theirs is not None and theirs.tag in ours and ours[theirs.tag].suite == theirs.suite:
                return theirs.suite, ours[theirs.tag].key, theirs.key
        raise SdpError(f"answer m= #{index + 1} ({am.media}) is RTP/SAVP without an a=crypto for one of "
                       f"our tags ({', '.join(str(t) for t in ours) or 'none'})", status=488)

    def _offer_format(self, m: MediaDescription, codec: Codec, pt: int, fmtp: Mapping[str, str]) -> None:
        m.formats.append(str(pt))
        m.add("rtpmap", f"{pt} {codec.rtpmap()}")
        if fmtp:
            m.add("fmtp", f"{pt} {format_fmtp(fmtp, codec.encoding_name)}")

    def _offer_video_fmtps(self, codec: Codec) -> list[dict[str, str]]:
        """One fmtp per payload type we offer for ``codec`` (H264: one per packetization mode)."""
        rules = rules_for(codec)
        return [rules.to_fmtp(p) for p in rules.local(codec, self.limits)]

    def reoffer(self, previous: SessionDescription, local: LocalMedia, direction: str = "sendrecv") -> SessionDescription:
        """A new offer in the same session (re-INVITE, hold/resume): same o= session id,
        version + 1, the same m= lines in the same order (RFC 3264 §8); streams we no longer
        offer stay as port 0."""
        fresh = self.offer(local, video=any(m.media == "video" and m.port for m in previous.media),
                           direction=direction,
                           srtp=any(m.port and m.proto.upper() in _SRTP for m in previous.media))
        pool = {m.media: m for m in fresh.media}
        keys = {m.media: self._offered_keys[i] for i, m in enumerate(fresh.media) if i in self._offered_keys}
        media: list[MediaDescription] = []
        self._offered_keys = {}
        for m in previous.media:
            new = pool.pop(m.media, None) if m.port else None
            if new is not None and new.media in keys:
                self._offered_keys[len(media)] = keys[new.media]
            media.append(new if new is not None else
                         MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"]))
        fresh.media = media
        fresh.origin = replace(previous.origin, sess_version=previous.origin.sess_version + 1,
                               address=local.address, addrtype=_addrtype(local.address))
        return fresh

    # ---- checking answers to our offers
    def process_answer(self, offer: SessionDescription, answer: SessionDescription) -> list[SdpStream]:
        """Check the answer to our ``offer`` and give the negotiated streams (RFC 3264 §6, §7).

        Raises :class:`SdpError` (status 488) when the answer does not fit the offer: a
        different number or kind of m= lines, another transport, a format we did not offer."""
        if len(answer.media) > len(offer.media) or not answer.media:
            raise SdpError(f"the answer has {len(answer.media)} m= lines, our offer had {len(offer.media)} "
                           "(RFC 3264 §6: one per offered stream, same order)", status=488)
        streams: list[SdpStream] = []
        # Some devices (and old SIP stacks) answer a late offer's audio+video with the audio line
        # alone: RFC 3264 wants a port-0 line per refused stream; we read the missing ones as that.
        for index, om in enumerate(offer.media[len(answer.media):], start=len(answer.media)):
            streams.append(SdpStream(media=om.media, index=index, accepted=False, proto=om.proto,
                                     reason="missing from the answer (taken as refused)"))
        missing, streams = streams, []
        for index, (om, am) in enumerate(zip(offer.media, answer.media)):
            if om.media != am.media:
                raise SdpError(f"answer m= #{index + 1} is {am.media}, our offer's is {om.media}", status=488)
            if om.port == 0 or am.port == 0:
                streams.append(SdpStream(media=am.media, index=index, accepted=False, proto=am.proto,
                                                reason="rejected in the answer (port 0)" if am.port == 0
                                                else "not offered (port 0)"))
                continue
            if am.proto.upper() != om.proto.upper():
                raise SdpError(f"answer m= #{index + 1} uses {am.proto}, we offered {om.proto}", status=488)
            streams.append(self._answered_stream(offer, answer, index, om, am))
        return streams + missing

    def _answered_stream(self, offer: SessionDescription, answer: SessionDescription, index: int,
                         om: MediaDescription,
                         am: MediaDescription) -> SdpStream:
        conn = answer.connection_of(am)
        if conn is None:
            raise SdpError(f"answer m= #{index + 1} ({am.media}) has no c= line", status=488)
        offered: dict[int, Codec] = {}
        for pt in om.payload_types:
            c = self._identify(om, pt)
            if c is not None:
                offered[pt] = c
        chosen: tuple[int, int, Codec] | None = None            # (remote pt, local pt, codec)
        dtmf: tuple[int, int] | None = None
        for pt in am.payload_types:
            codec = self._identify(am, pt)
            local_pt = self._local_pt_for(om, offered, pt, codec, am.fmtp_params(pt))
            if local_pt is None:
                raise SdpError(f"answer m= #{index + 1} ({am.media}) has {self._format_name(am, pt)} "
                               f"(payload type {pt}), which we did not offer", status=488)
            codec = offered[local_pt]
            if codec.name == "telephone-event":
                if dtmf is None:
                    dtmf = (pt, local_pt)
            elif chosen is None:
                chosen = (pt, local_pt, codec)
        if chosen is None:
            raise SdpError(f"answer m= #{index + 1} ({am.media}) accepts no codec, only "
                           f"{', '.join(self._format_name(am, p) for p in am.payload_types) or 'nothing'}",
                           status=488)
        pt, local_pt, codec = chosen
        rules = rules_for(codec)
        ours = om.fmtp_params(local_pt)
        theirs = am.fmtp_params(pt)
        if codec.name.lower() == "h264":
            # an answer that leaves out packetization-mode / profile-level-id keeps our offer's
            keep = {k: v for k, v in _lower(ours).items() if k in ("packetization-mode", "profile-level-id")}
            theirs = {**keep, **_lower(theirs)}
        try:
            rx_params, tx_params = rules.from_fmtp(codec, ours), rules.from_fmtp(codec, theirs)
        except NoMatch as exc:
            raise SdpError(f"answer m= #{index + 1} ({am.media}): {exc.reason}", status=488) from None
        our = _intersect(_mirror(answer.direction_of(am)), offer.direction_of(om))
        if conn.is_hold:
            our = _without_send(our)
        rtcp_fb = [fb.lower() for fb in am.rtcp_fb_for(pt) if fb.lower() in _FEEDBACK] if am.media == "video" else []
        remote_kbps = _remote_kbps(answer, am)
        video = am.media == "video"
        return SdpStream(
            media=am.media, index=index, accepted=True,
            rx=MediaFormat(codec, local_pt, rx_params, _audio_ptime(codec),
                           self.max_bitrate_kbps * 1000 if video and self.max_bitrate_kbps else None),
            tx=MediaFormat(codec, pt, tx_params, _audio_ptime(codec),
                           remote_kbps * 1000 if video and remote_kbps else None),
            dtmf_rx_pt=dtmf[1] if dtmf else None, dtmf_tx_pt=dtmf[0] if dtmf else None,
            remote_host=conn.address, remote_port=am.port, remote_rtcp_port=_rtcp_port(am),
            direction=our, remote_ptime=am.ptime, maxptime=am.maxptime, bandwidth_kbps=remote_kbps,
            rtcp_fb=rtcp_fb, proto=am.proto, srtp=self._answered_srtp(index, om, am),
        )

    def _local_pt_for(self, om: MediaDescription, offered: Mapping[int, Codec], pt: int,
                      codec: Codec | None, fmtp: Mapping[str, str]) -> int | None:
        """Which of our offered payload types an answered format is (same number and codec, or
        a different number for a codec we offered: RFC 3264 §6.1 only says SHOULD keep it)."""
        def same_h264_mode(local_pt: int) -> bool:
            implied = codec.fmtp_implied.get("packetization-mode", "0") if codec else "0"
            theirs = _lower(fmtp).get("packetization-mode", implied)
            ours = _lower(om.fmtp_params(local_pt)).get("packetization-mode", implied)
            return theirs == ours

        if pt in offered and (codec is None or codec is offered[pt]):
            c = offered[pt]
            if c.name.lower() != "h264" or same_h264_mode(pt) or "packetization-mode" not in _lower(fmtp):
                return pt
        if codec is None:
            return None
        for local_pt, c in offered.items():
            if c is codec and (c.name.lower() != "h264" or same_h264_mode(local_pt)):
                return local_pt
        return None

    # ---- session helpers
    def _new_session(self, local: LocalMedia, previous: SessionDescription | None) -> SessionDescription:
        if previous is not None:
            origin = replace(previous.origin, address=local.address, addrtype=_addrtype(local.address))
        else:
            sess = str(secrets.randbelow(2**62) + 1)
            origin = Origin("cau", sess, 1, "IN", _addrtype(local.address), local.address)
        return SessionDescription(origin=origin, session_name=self.session_name,
                                  connection=Connection.for_host(local.address), timing=[(0, 0)])

    @staticmethod
    def _continue_origin(sd: SessionDescription, previous: SessionDescription | None) -> SessionDescription:
        """RFC 3264 §8: the version goes up by one when the SDP differs from the previous one."""
        if previous is None:
            return sd
        same = sd.serialize() == replace(previous, origin=sd.origin).serialize()
        if not same:
            sd.origin = replace(sd.origin, sess_version=previous.origin.sess_version + 1)
        return sd


# --------------------------------------------------------------------------- small helpers

_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_CAPS = {"sendrecv": {"send", "recv"}, "sendonly": {"send"}, "recvonly": {"recv"}, "inactive": set()}


def _mirror(direction: str) -> str:
    return _MIRROR.get(direction, "sendrecv")


def _from_caps(caps: Iterable[str]) -> str:
    s = set(caps)
    return next(d for d, c in _CAPS.items() if c == s)


def _intersect(a: str, b: str) -> str:
    return _from_caps(_CAPS[a] & _CAPS[b])


def _without_send(d: str) -> str:
    return _from_caps(_CAPS[d] - {"send"})


def _addrtype(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def _rtcp_port(m: MediaDescription) -> int:
    return m.rtcp if m.rtcp is not None else m.port + 1


def _min_present(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _remote_kbps(sd: SessionDescription, m: MediaDescription) -> int | None:
    """The tightest bandwidth the remote gave for this stream (b=AS, b=TIAS, session AS/CT), kbit/s."""
    tias = m.bandwidth.get("TIAS")
    s_tias = sd.bandwidth.get("TIAS")
    return _min_present(
        m.bandwidth.get("AS"),
        math.ceil(tias / 1000) if tias is not None else None,
        sd.bandwidth.get("AS"),
        sd.bandwidth.get("CT"),
        math.ceil(s_tias / 1000) if s_tias is not None else None,
    )


def _listing(items: list[str], *, sep: str = ", ", most: int = 12, width: int = 32) -> str:
    """At most ``most`` items of at most ``width`` characters each: a reason phrase an offer of
    hostile length cannot make long."""
    shown = [i if len(i) <= width else i[:width - 1] + "…" for i in list(items)[:most]]
    more = len(items) - len(shown)
    return sep.join(shown) + (f"{sep}and {more} more" if more > 0 else "")
