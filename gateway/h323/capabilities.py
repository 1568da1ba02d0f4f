"""H.245 TerminalCapabilitySet built from the codec catalogue, and read back from a far end.

The capability identity of each codec comes from its ``h245`` entry in
``codecs/*.yaml`` (see docs/codecs.md); nothing here hard-codes a codec
beyond the H.245 structure itself.

* audio (``audioCapability``): ``{choice: g722-64k, frames_per_packet: 20}``
  → ``receiveAudioCapability (g722-64k, 20)``.  For G.711 and G.722 one H.245
  "frame" is 1 ms of audio, so 20 means 20 ms packets.
* video ``h263VideoCapability``: MPIs (sqcif/qcif/cif/cif4/cif16), maxBitRate
  (units of 100 bit/s) and the five mandatory option booleans.
* video ``genericVideoCapability`` (H.264, H.241 §8.3): capabilityIdentifier
  standard OID, maxBitRate, collapsing Profile (41, booleanArray) and Level
  (42, unsignedMin).
* ``userInputCapability`` (telephone-event): each listed choice (dtmf,
  basicString, hookflash ...) as ``receiveAndTransmitUserInputCapability``,
  plus ``receiveRTPAudioTelephonyEventCapability`` with the RFC 4733 payload type.

capabilityDescriptors holds one descriptor: {audio alternatives} ×
{video alternatives} × each user-input capability.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.catalogue import Catalogue, Codec
from gateway.media.codecs import audio as audio_rules
from gateway.media.codecs import h261 as h261_rules
from gateway.media.codecs import h263 as h263_rules
from gateway.media.codecs import h264 as h264_rules

from . import asn1

__all__ = [
    "H241_PROFILE",
    "H241_LEVEL",
    "H264_OID",
    "RemoteCapability",
    "parse_capabilities",
    "simultaneous_capabilities",
    "tcs_message",
    "terminal_capability_set",
]

H264_OID: tuple[int, ...] = (0, 0, 8, 241, 0, 0, 1)
H241_PROFILE = 41
H241_LEVEL = 42


def _oid(text: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(text, str):
        return tuple(int(x) for x in text.split("."))
    return tuple(text)


def _audio(codec: Codec, frames: int | None) -> tuple[str, Any]:
    return ("receiveAudioCapability", audio_rules.to_h245(codec, audio_rules.AudioParams(frames), None))


def _video(codec: Codec, max_bitrate: int | None, h264_level: int | None) -> tuple[str, Any]:
    """Our receive capability for ``codec`` (``max_bitrate`` in 100 bit/s, ``h264_level`` an H.241 Level)."""
    h = codec.h245 or {}
    choice = h.get("choice")
    cap = max_bitrate * 100 if max_bitrate is not None else None
    if choice == "h263VideoCapability":
        return ("receiveVideoCapability", ("h263VideoCapability",
                                           h263_rules.to_h245(codec, h263_rules.local_h245(codec), cap)))
    if choice == "h261VideoCapability":
        return ("receiveVideoCapability", ("h261VideoCapability",
                                           h261_rules.to_h245(codec, h261_rules.local_h245(codec), cap)))
    if choice == "genericVideoCapability":
        params = h264_rules.local_h245(codec)
        if h264_level is not None:
            params = params.with_level(h264_rules.level_of_h241(h264_level))
        return ("receiveVideoCapability", ("genericVideoCapability", h264_rules.to_h245(codec, params, cap)))
    raise ValueError(f"{codec.name}: H.245 video choice {choice!r} is not supported here ({codec.source})")


def terminal_capability_set(catalogue: Catalogue, audio_codecs: Iterable[str] = ("G722", "PCMU", "PCMA"),
                            video_codecs: Iterable[str] = ("H264", "H263"), seq: int = 1, *,
                            user_input: bool = True, telephone_event_pt: int | None = 101,
                            audio_frames: int | None = None, video_max_bitrate: int | None = None,
                            h264_level: int | None = None) -> dict[str, Any]:
    """A TerminalCapabilitySet value (pycrate notation) for the named catalogue codecs.

    Order is preference order.  ``video_max_bitrate`` in units of 100 bit/s
    overrides the catalogue; ``h264_level`` is an H.241 Level value (71 = 3.1).
    ``ValueError`` names a codec that has no H.245 capability or the wrong media.
    """
    if not 0 <= seq <= 255:
        raise ValueError(f"TerminalCapabilitySet sequenceNumber {seq} is not in 0..255")
    table: list[dict[str, Any]] = []
    audio_nums: list[int] = []
    video_nums: list[int] = []
    uii_nums: list[int] = []

    def add(cap: tuple[str, Any]) -> int:
        n = len(table) + 1
        table.append({"capabilityTableEntryNumber": n, "capability": cap})
        return n

    for name in audio_codecs:
        c = catalogue.get(name)
        if c.media != "audio" or not c.h245 or c.h245.get("capability") != "audioCapability":
            raise ValueError(f"{c.name} has no H.245 audioCapability in the catalogue ({c.source})")
        audio_nums.append(add(_audio(c, audio_frames)))
    for name in video_codecs:
        c = catalogue.get(name)
        if c.media != "video" or not c.h245 or c.h245.get("capability") != "videoCapability":
            raise ValueError(f"{c.name} has no H.245 videoCapability in the catalogue ({c.source})")
        video_nums.append(add(_video(c, video_max_bitrate, h264_level)))
    if user_input:
        te = next((c for c in catalogue if c.h245 and c.h245.get("capability") == "userInputCapability"), None)
        if te is not None:
            for choice in te.h245.get("choices", ()):
                if choice == "receiveRTPAudioTelephonyEventCapability":
                    if telephone_event_pt is None:
                        continue
                    uii_nums.append(add(("receiveRTPAudioTelephonyEventCapability", {
                        "dynamicRTPPayloadType": telephone_event_pt,
                        "audioTelephoneEvent": str(te.h245.get("audio_telephone_event", "0-15"))})))
                else:
                    uii_nums.append(add(("receiveAndTransmitUserInputCapability", (choice, 0))))
    sim = [s for s in ([audio_nums] if audio_nums else []) + ([video_nums] if video_nums else [])]
    sim += [[n] for n in uii_nums]
    tcs: dict[str, Any] = {"sequenceNumber": seq, "protocolIdentifier": asn1.H245_PROTOCOL_ID}
    if table:
        tcs["capabilityTable"] = table
        tcs["capabilityDescriptors"] = [{"capabilityDescriptorNumber": 0, "simultaneousCapabilities": sim}]
    return tcs


def tcs_message(tcs: Mapping[str, Any]) -> tuple[str, Any]:
    """The MultimediaSystemControlMessage carrying ``tcs`` (for :func:`asn1.encode_h245`)."""
    return ("request", ("terminalCapabilitySet", dict(tcs)))


# --------------------------------------------------------------------------- far end


@dataclass
class RemoteCapability:
    """One capabilityTable entry of a far end's TerminalCapabilitySet.

    ``codec_name`` is the catalogue name (``"G722"``, ``"H264"`` ...) or None
    when Cầu does not know the capability (then ``capability`` names it, e.g.
    ``h261VideoCapability``, ``genericAudioCapability 0.0.7.7221.1.0``).
    ``params`` are the codec's typed parameters (:mod:`gateway.media.codecs`) and
    ``bitrate_cap`` its maxBitRate in bit/s; ``details`` holds what is not a codec's
    (telephone-event payload type, a nonStandard value, a data application's bitrate).
    """

    entry: int
    media: str                  # audio | video | userInput | data | other
    direction: str              # receive | transmit | receiveAndTransmit | ""
    capability: str             # H.245 choice name
    codec_name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    params: Any = None
    bitrate_cap: int | None = None


def _catalogue_index(catalogue: Catalogue | None) -> tuple[dict[str, str], dict[tuple[int, ...], str]]:
    from gateway.catalogue import default_catalogue

    cat = catalogue if catalogue is not None else default_catalogue()
    by_choice: dict[str, str] = {}
    by_oid: dict[tuple[int, ...], str] = {}
    for c in cat:
        h = c.h245
        if not h:
            continue
        if h.get("choice") == "genericVideoCapability" or h.get("choice") == "genericAudioCapability":
            by_oid[_oid(h["capabilityIdentifier"])] = c.name
        elif h.get("capability") == "audioCapability":
            by_choice[h["choice"]] = c.name
        elif h.get("choice") in ("h263VideoCapability", "h261VideoCapability") and not h.get("h263Options"):
            by_choice[h["choice"]] = c.name
        elif h.get("choice") == "h263VideoCapability":
            by_choice["h263VideoCapability+h263Options"] = c.name
    return by_choice, by_oid


def _one(entry: int, cap: tuple[str, Any], by_choice: Mapping[str, str],
         by_oid: Mapping[tuple[int, ...], str]) -> RemoteCapability:
    name, v = cap
    for direction in ("receiveAndTransmit", "receive", "transmit"):
        if name.startswith(direction):
            rest = name[len(direction):]
            break
    else:
        direction, rest = "", name
    if rest == "AudioCapability":
        choice, inner = v
        if choice == "genericAudioCapability":
            oid = inner["capabilityIdentifier"]
            ident = ".".join(map(str, oid[1])) if oid[0] == "standard" else repr(oid)
            rate = inner.get("maxBitRate")
            return RemoteCapability(entry, "audio", direction, f"genericAudioCapability {ident}",
                                    by_oid.get(oid[1]) if oid[0] == "standard" else None,
                                    bitrate_cap=rate * 100 if isinstance(rate, int) else None)
        if isinstance(inner, int):
            return RemoteCapability(entry, "audio", direction, choice, by_choice.get(choice),
                                    params=audio_rules.from_h245(None, inner)[0])
        return RemoteCapability(entry, "audio", direction, choice, by_choice.get(choice), {"value": inner})
    if rest == "VideoCapability":
        choice, inner = v
        if choice == "h263VideoCapability":
            key = "h263VideoCapability+h263Options" if "h263Options" in inner else "h263VideoCapability"
            codec = by_choice.get(key) or by_choice.get("h263VideoCapability")
            params, cap = h263_rules.from_h245(None, inner)
            return RemoteCapability(entry, "video", direction, choice, codec, params=params, bitrate_cap=cap)
        if choice == "h261VideoCapability":
            params, cap = h261_rules.from_h245(None, inner)
            return RemoteCapability(entry, "video", direction, choice, by_choice.get(choice), params=params,
                                    bitrate_cap=cap)
        if choice == "genericVideoCapability":
            oid = inner["capabilityIdentifier"]
            ident = ".".join(map(str, oid[1])) if oid[0] == "standard" else repr(oid)
            codec = by_oid.get(oid[1]) if oid[0] == "standard" else None
            label = choice if codec else f"{choice} {ident}"
            if codec is None or tuple(oid[1]) != h264_rules.OID:
                rate = inner.get("maxBitRate")
                return RemoteCapability(entry, "video", direction, label, codec,
                                        bitrate_cap=rate * 100 if isinstance(rate, int) else None)
            params, cap = h264_rules.from_h245(None, inner)
            return RemoteCapability(entry, "video", direction, label, codec, params=params, bitrate_cap=cap)
        return RemoteCapability(entry, "video", direction, choice, None, {})
    if rest == "UserInputCapability":
        choice = v[0]
        return RemoteCapability(entry, "userInput", direction, choice, None, {})
    if name == "receiveRTPAudioTelephonyEventCapability":
        return RemoteCapability(entry, "userInput", "receive", name, "telephone-event",
                                {"payload_type": v["dynamicRTPPayloadType"], "events": v["audioTelephoneEvent"]})
    if rest == "DataApplicationCapability":
        return RemoteCapability(entry, "data", direction, v["application"][0], None,
                                {"max_bitrate": v.get("maxBitRate")})
    return RemoteCapability(entry, "other", direction, name, None, {})


def parse_capabilities(tcs: Mapping[str, Any], catalogue: Catalogue | None = None) -> list[RemoteCapability]:
    """Every capabilityTable entry of a TerminalCapabilitySet, recognised against the catalogue.

    Entries without a capability (a capability being removed) are skipped;
    unknown capabilities are listed with ``codec_name=None``.
    """
    by_choice, by_oid = _catalogue_index(catalogue)
    out: list[RemoteCapability] = []
    for e in tcs.get("capabilityTable", ()):
        if "capability" not in e:
            continue
        try:
            out.append(_one(e["capabilityTableEntryNumber"], e["capability"], by_choice, by_oid))
        except (KeyError, TypeError, ValueError, IndexError):
            out.append(RemoteCapability(e["capabilityTableEntryNumber"], "other", "",
                                        str(e["capability"][0]), None, {}))
    return out


def simultaneous_capabilities(tcs: Mapping[str, Any]) -> list[list[list[int]]]:
    """capabilityDescriptors as lists: descriptor → alternative sets → entry numbers."""
    return [[list(alt) for alt in d.get("simultaneousCapabilities", ())]
            for d in tcs.get("capabilityDescriptors", ())]
