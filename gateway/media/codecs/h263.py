"""H.263: H263 (RFC 2190, static payload type 34) and H263-1998 (RFC 4629), SDP and H.245.

Parameters are the picture sizes a receiver decodes, each with its MPI (at
most 29.97/MPI frames per second at that size), a MaxBR and the annexes it
accepts. Both SDP (``CIF=1;QCIF=1``, RFC 4629 §8.1.1) and H.245's
``h263VideoCapability`` (``cifMPI``, ``qcifMPI`` ...) say the same thing.

Rules (one set for SDP answers and H.245 channels): the sizes both ends
support, MPI the slower of the two; no size given means QCIF at MPI 2 (RFC 4629
§8.1.1: every H.263 decoder supports QCIF); annexes are never answered (our
encoder uses none).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalogue import Codec

from . import Limits, NoMatch, parse_int

#: standard picture formats, in SDP's names, smallest first
SIZES: dict[str, tuple[int, int]] = {
    "SQCIF": (128, 96), "QCIF": (176, 144), "CIF": (352, 288), "CIF4": (704, 576), "CIF16": (1408, 1152),
}
H245_MPI: dict[str, str] = {"SQCIF": "sqcifMPI", "QCIF": "qcifMPI", "CIF": "cifMPI", "CIF4": "cif4MPI",
                            "CIF16": "cif16MPI"}
_ANNEX_OF_BOOLEAN = {"unrestrictedVector": "D", "arithmeticCoding": "E", "advancedPrediction": "F",
                     "pbFrames": "G"}
_H263_BOOLEANS = ("unrestrictedVector", "arithmeticCoding", "advancedPrediction", "pbFrames",
                  "temporalSpatialTradeOffCapability")
#: H.245 H263Options: every mandatory BOOLEAN (all False: we use none of the H.263+ modes)
H263_OPTIONS_BOOLEANS = (
    "advancedIntraCodingMode", "deblockingFilterMode", "improvedPBFramesMode", "unlimitedMotionVectors",
    "fullPictureFreeze", "partialPictureFreezeAndRelease", "resizingPartPicFreezeAndRelease",
    "fullPictureSnapshot", "partialPictureSnapshot", "videoSegmentTagging", "progressiveRefinement",
    "dynamicPictureResizingByFour", "dynamicPictureResizingSixteenthPel", "dynamicWarpingHalfPel",
    "dynamicWarpingSixteenthPel", "independentSegmentDecoding", "slicesInOrder-NonRect",
    "slicesInOrder-Rect", "slicesNoOrder-NonRect", "slicesNoOrder-Rect", "alternateInterVLCMode",
    "modifiedQuantizationMode", "reducedResolutionUpdate", "separateVideoBackChannel",
)
#: RFC 4629 annex parameters (named by letter) and the other parameters we read
_ANNEXES = ("D", "E", "F", "G", "I", "J", "K", "N", "P", "T")


@dataclass(frozen=True)
class H263Params:
    """``mpi``: (size name, MPI 1..32) pairs, smallest size first."""

    mpi: tuple[tuple[str, int], ...] = (("QCIF", 2),)
    max_br: int | None = None           # RFC 4629 MaxBR, units of 100 bit/s
    annexes: frozenset[str] = frozenset()

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.mpi)

    def largest(self) -> tuple[int, int]:
        """The largest picture this receiver takes."""
        return max((SIZES[s] for s, _ in self.mpi), key=lambda wh: wh[0] * wh[1], default=SIZES["QCIF"])


def _ordered(sizes: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple((s, int(sizes[s])) for s in SIZES if s in sizes)


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> H263Params:
    sizes: dict[str, int] = {}
    annexes: set[str] = set()
    max_br = None
    for k, v in fmtp.items():
        ku = str(k).upper()
        if ku in SIZES:
            mpi = parse_int(str(v).split(",")[0], 1, 32)
            if mpi is not None:
                sizes[ku] = mpi
        elif ku == "MAXBR":
            max_br = parse_int(v, 1)
        elif ku in _ANNEXES:
            annexes.add(ku)
    return H263Params(_ordered(sizes) or (("QCIF", 2),), max_br, frozenset(annexes))


def to_fmtp(params: H263Params) -> dict[str, str]:
    out = {s: str(m) for s, m in params.mpi}
    if params.max_br is not None:
        out["MaxBR"] = str(params.max_br)
    return out


def local(codec: Codec, limits: Limits) -> list[H263Params]:
    """The catalogue's sizes, without those above the room's max_resolution ([] when none fits)."""
    sizes: dict[str, int] = {}
    for k, v in codec.fmtp.items():
        size = SIZES.get(k.upper())
        mpi = parse_int(v, 1, 32)
        if size is None or mpi is None:
            continue
        cap = limits.max_resolution
        if cap and (size[0] > cap[0] or size[1] > cap[1]):
            continue
        sizes[k.upper()] = mpi
    return [H263Params(_ordered(sizes))] if sizes else []


def common(ours: H263Params, theirs: H263Params) -> H263Params:
    """The sizes both take, MPI the slower; raises NoMatch when there is none."""
    t = theirs.sizes
    both = {s: max(m, t[s]) for s, m in ours.mpi if s in t}
    if not both:
        raise NoMatch(f"H.263 picture sizes {', '.join(t)} (we do {', '.join(ours.sizes) or 'none'})")
    return H263Params(_ordered(both), theirs.max_br if theirs.max_br is not None else ours.max_br)


def answer(codec: Codec, offered: H263Params, limits: Limits) -> tuple[H263Params, H263Params]:
    mine = local(codec, limits)
    if not mine:
        raise NoMatch(f"{codec.name}: no picture size within the room's max_resolution")
    try:
        both = common(mine[0], offered)
    except NoMatch as exc:
        raise NoMatch(f"{codec.name} {exc.reason.removeprefix('H.263 ')}") from None
    return H263Params(both.mpi), H263Params(both.mpi, offered.max_br)


def from_h245(codec: Codec | None, value: Mapping[str, Any]) -> tuple[H263Params, int | None]:
    """An h263VideoCapability value → (params, bitrate cap in bit/s)."""
    sizes = {s: int(value[f]) for s, f in H245_MPI.items() if isinstance(value.get(f), int)}
    annexes = frozenset(a for b, a in _ANNEX_OF_BOOLEAN.items() if value.get(b))
    rate = value.get("maxBitRate")
    cap = int(rate) * 100 if isinstance(rate, int) and rate > 0 else None
    return H263Params(_ordered(sizes), None, annexes), cap


def to_h245(codec: Codec, params: H263Params, bitrate_cap: int | None) -> dict[str, Any]:
    """The h263VideoCapability value (a capability or a logical channel's DataType)."""
    h = codec.h245 or {}
    cap: dict[str, Any] = {H245_MPI[s]: int(m) for s, m in params.mpi}
    cap["maxBitRate"] = max(1, bitrate_cap // 100) if bitrate_cap else int(h.get("maxBitRate", 3840))
    for b in _H263_BOOLEANS:
        cap[b] = bool(h.get(b, False))          # the catalogue's (we use no annex)
    cap["errorCompensation"] = False
    if h.get("h263Options"):
        cap["h263Options"] = {k: False for k in H263_OPTIONS_BOOLEANS}
    return cap


def local_h245(codec: Codec) -> H263Params:
    """Our receive capability as the catalogue's H.245 entry states it (MPIs per size)."""
    h = codec.h245 or {}
    sizes = {s: int(h[f]) for s, f in H245_MPI.items() if f in h}
    return H263Params(_ordered(sizes))
