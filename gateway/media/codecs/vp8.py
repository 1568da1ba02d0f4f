"""VP8 (RFC 7741 §6.1): optional ``max-fr`` (frames/s) and ``max-fs`` (macroblocks)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalogue import Codec

from . import Limits, lower_keys, parse_int


@dataclass(frozen=True)
class VP8Params:
    max_fs: int | None = None   # macroblocks per frame the receiver takes
    max_fr: int | None = None   # frames per second


def macroblocks(size: tuple[int, int]) -> int:
    return math.ceil(size[0] / 16) * math.ceil(size[1] / 16)


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> VP8Params:
    p = lower_keys(fmtp)
    return VP8Params(parse_int(p.get("max-fs"), 1), parse_int(p.get("max-fr"), 1, 1000))


def to_fmtp(params: VP8Params) -> dict[str, str]:
    out: dict[str, str] = {}
    if params.max_fs is not None:
        out["max-fs"] = str(params.max_fs)
    if params.max_fr is not None:
        out["max-fr"] = str(params.max_fr)
    return out


def local(codec: Codec, limits: Limits) -> list[VP8Params]:
    if limits.max_resolution is None:
        return [VP8Params()]
    return [VP8Params(macroblocks(limits.max_resolution), 30)]


def answer(codec: Codec, offered: VP8Params, limits: Limits) -> tuple[VP8Params, VP8Params]:
    return local(codec, limits)[0], offered


def common(ours: VP8Params, theirs: VP8Params) -> VP8Params:
    def lo(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else min(a, b)

    return VP8Params(lo(ours.max_fs, theirs.max_fs), lo(ours.max_fr, theirs.max_fr))


def from_h245(codec: Codec | None, value: Any) -> tuple[VP8Params, int | None]:
    return VP8Params(), None


def to_h245(codec: Codec, params: VP8Params, bitrate_cap: int | None) -> Any:
    raise ValueError("VP8 is not carried by H.323")
