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
# H.241 Table 8-? optional H.264 parameters (standard parameterIdentifier → name)
H241_PARAMETERS: dict[int, str] = {
    3: "CustomMaxMBPS", 4: "CustomMaxFS", 5: "CustomMaxDPB", 6: "CustomMaxBRandCPB",
    7: "MaxStaticMBPS", 8: "max-rcmd-nal-unit-size", 9: "max-nal-unit-size",
    10: "SampleAspectRatiosSupported", 11: "AdditionalModesSupported", 12: "AdditionalDisplayCapabilities",
    41: "Profile", 42: "Level",
}
# H.241 Profile booleanArray bits
H241_PROFILES: dict[int, str] = {64: "baseline", 32: "main", 16: "extended", 8: "high"}
_MPI_FIELDS = ("sqcifMPI", "qcifMPI", "cifMPI", "cif4MPI", "cif16MPI")
_H263_BOOLEANS = ("unrestrictedVector", "arithmeticCoding", "advancedPrediction", "pbFrames",
                  "temporalSpatialTradeOffCapability")


def _oid(text: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(text, str):
        return tuple(int(x) for x in text.split("."))
    return tuple(text)


def _all_false_booleans(type_name: str) -> dict[str, bool]:
    """Every mandatory BOOLEAN of an H.245 SEQUENCE set to False (h263Options has 22)."""
    obj = getattr(asn1.h245_module().MULTIMEDIA_SYSTEM_CONTROL, type_name)
    return {k: False for k in obj._root_mand if obj._cont[k].TYPE == "BOOLEAN"}


def _audio(codec: Codec, frames: int | None) -> tuple[str, Any]:
    h = codec.h245 or {}
    n = frames if frames is not None else int(h.get("frames_per_packet", codec.ptime_ms or 20))
    return ("receiveAudioCapability", (h["choice"], max(1, min(256, n))))


def _h263(codec: Codec, max_bitrate: int | None) -> dict[str, Any]:
    h = codec.h245 or {}
    cap: dict[str, Any] = {k: int(h[k]) for k in _MPI_FIELDS if k in h}
    cap["maxBitRate"] = int(max_bitrate if max_bitrate is not None else h.get("maxBitRate", 3840))
    for k in _H263_BOOLEANS:
        cap[k] = bool(h.get(k, False))
    cap["errorCompensation"] = False
    if h.get("h263Options"):
        cap["h263Options"] = _all_false_booleans("H263Options")
    return cap


def _h264(codec: Codec, max_bitrate: int | None, level: int | None) -> dict[str, Any]:
    h = codec.h245 or {}
    collapsing = []
    for p in h.get("collapsing", ()):
        value = int(p["value"])
        if int(p["id"]) == H241_LEVEL and level is not None:
            value = level
        collapsing.append({"parameterIdentifier": ("standard", int(p["id"])),
                           "parameterValue": (str(p["type"]), value)})
    return {"capabilityIdentifier": ("standard", _oid(h["capabilityIdentifier"])),
            "maxBitRate": int(max_bitrate if max_bitrate is not None else h.get("maxBitRate", 3840)),
            "collapsing": collapsing}


def _video(codec: Codec, max_bitrate: int | None, h264_level: int | None) -> tuple[str, Any]:
    h = codec.h245 or {}
    choice = h.get("choice")
    if choice == "h263VideoCapability":
        return ("receiveVideoCapability", ("h263VideoCapability", _h263(codec, max_bitrate)))
    if choice == "genericVideoCapability":
        return ("receiveVideoCapability", ("genericVideoCapability", _h264(codec, max_bitrate, h264_level)))
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
    """

    entry: int
    media: str                  # audio | video | userInput | data | other
    direction: str              # receive | transmit | receiveAndTransmit | ""
    capability: str             # H.245 choice name
    codec_name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


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
        elif h.get("choice") == "h263VideoCapability" and not h.get("h263Options"):
            by_choice["h263VideoCapability"] = c.name
        elif h.get("choice") == "h263VideoCapability":
            by_choice["h263VideoCapability+h263Options"] = c.name
    return by_choice, by_oid


def _generic_details(cap: Mapping[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if "maxBitRate" in cap:
        d["max_bitrate"] = cap["maxBitRate"]
    params: dict[str, Any] = {}
    for p in list(cap.get("collapsing", ())) + list(cap.get("nonCollapsing", ())):
        pid = p["parameterIdentifier"]
        kind, value = p["parameterValue"]
        key = H241_PARAMETERS.get(pid[1], str(pid[1])) if pid[0] == "standard" else repr(pid)
        params[key] = value
    if params:
        d["parameters"] = params
    if "Profile" in params:
        d["profiles"] = [name for bit, name in H241_PROFILES.items() if params["Profile"] & bit]
    if "Level" in params:
        d["level"] = params["Level"]
    return d


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
            return RemoteCapability(entry, "audio", direction, f"genericAudioCapability {ident}",
                                    by_oid.get(oid[1]) if oid[0] == "standard" else None,
                                    _generic_details(inner))
        details = {"frames_per_packet": inner} if isinstance(inner, int) else {"value": inner}
        return RemoteCapability(entry, "audio", direction, choice, by_choice.get(choice), details)
    if rest == "VideoCapability":
        choice, inner = v
        if choice == "h263VideoCapability":
            details = {k: inner[k] for k in _MPI_FIELDS if k in inner}
            details["max_bitrate"] = inner.get("maxBitRate")
            key = "h263VideoCapability+h263Options" if "h263Options" in inner else "h263VideoCapability"
            codec = by_choice.get(key) or by_choice.get("h263VideoCapability")
            return RemoteCapability(entry, "video", direction, choice, codec, details)
        if choice == "h261VideoCapability":
            details = {k: inner[k] for k in ("qcifMPI", "cifMPI") if k in inner}
            details["max_bitrate"] = inner.get("maxBitRate")
            return RemoteCapability(entry, "video", direction, choice, by_choice.get(choice), details)
        if choice == "genericVideoCapability":
            oid = inner["capabilityIdentifier"]
            ident = ".".join(map(str, oid[1])) if oid[0] == "standard" else repr(oid)
            codec = by_oid.get(oid[1]) if oid[0] == "standard" else None
            label = choice if codec else f"{choice} {ident}"
            return RemoteCapability(entry, "video", direction, label, codec, _generic_details(inner))
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
