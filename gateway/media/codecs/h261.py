"""H.261 (RFC 4587 SDP, H.245 ``h261VideoCapability``): QCIF and CIF, each with an MPI 1..4.

The video codec every H.323 video terminal must support. SDP ``QCIF=1;CIF=2``
(RFC 4587 §6.1; no size given: QCIF at MPI 1); ``D=1`` is Annex D still images,
which we neither send nor need.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalogue import Codec

from . import Limits, NoMatch, parse_int

SIZES: dict[str, tuple[int, int]] = {"QCIF": (176, 144), "CIF": (352, 288)}
H245_MPI = {"QCIF": "qcifMPI", "CIF": "cifMPI"}


@dataclass(frozen=True)
class H261Params:
    mpi: tuple[tuple[str, int], ...] = (("QCIF", 1),)
    still_images: bool = False          # Annex D

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.mpi)

    def largest(self) -> tuple[int, int]:
        return SIZES["CIF"] if "CIF" in self.sizes else SIZES["QCIF"]


def _ordered(sizes: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple((s, int(sizes[s])) for s in SIZES if s in sizes)


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> H261Params:
    sizes: dict[str, int] = {}
    still = False
    for k, v in fmtp.items():
        ku = str(k).upper()
        if ku in SIZES:
            mpi = parse_int(v, 1, 4)
            if mpi is not None:
                sizes[ku] = mpi
        elif ku == "D":
            still = str(v).strip() == "1"
    return H261Params(_ordered(sizes) or (("QCIF", 1),), still)


def to_fmtp(params: H261Params) -> dict[str, str]:
    return {s: str(m) for s, m in params.mpi}


def local(codec: Codec, limits: Limits) -> list[H261Params]:
    p = from_fmtp(codec, codec.fmtp) if codec.fmtp else local_h245(codec)
    cap = limits.max_resolution
    if cap:
        keep = {s: m for s, m in p.mpi if SIZES[s][0] <= cap[0] and SIZES[s][1] <= cap[1]}
        return [H261Params(_ordered(keep))] if keep else []
    return [p]


def common(ours: H261Params, theirs: H261Params) -> H261Params:
    t = theirs.sizes
    both = {s: max(m, t[s]) for s, m in ours.mpi if s in t}
    if not both:
        raise NoMatch(f"H261 picture sizes {', '.join(t)} (we do {', '.join(ours.sizes) or 'none'})")
    return H261Params(_ordered(both))


def answer(codec: Codec, offered: H261Params, limits: Limits) -> tuple[H261Params, H261Params]:
    mine = local(codec, limits)
    if not mine:
        raise NoMatch("H261: no picture size within the room's max_resolution")
    both = common(mine[0], offered)
    return both, both


def from_h245(codec: Codec | None, value: Mapping[str, Any]) -> tuple[H261Params, int | None]:
    sizes = {s: int(value[f]) for s, f in H245_MPI.items() if isinstance(value.get(f), int)}
    rate = value.get("maxBitRate")
    cap = int(rate) * 100 if isinstance(rate, int) and rate > 0 else None
    return H261Params(_ordered(sizes), bool(value.get("stillImageTransmission"))), cap


def to_h245(codec: Codec, params: H261Params, bitrate_cap: int | None) -> dict[str, Any]:
    h = codec.h245 or {}
    cap: dict[str, Any] = {H245_MPI[s]: int(m) for s, m in params.mpi}
    rate = max(1, bitrate_cap // 100) if bitrate_cap else int(h.get("maxBitRate", 3840))
    cap.update(temporalSpatialTradeOffCapability=False, maxBitRate=min(19200, rate),
               stillImageTransmission=False)
    return cap


def local_h245(codec: Codec) -> H261Params:
    h = codec.h245 or {}
    return H261Params(_ordered({s: int(h[f]) for s, f in H245_MPI.items() if f in h}) or (("QCIF", 1),))
