"""Rules for a codec without a module of its own: fmtp kept as given, no H.245 form."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.catalogue import Codec

from . import GenericParams, Limits, lower_keys


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> GenericParams:
    return GenericParams(tuple(sorted(lower_keys(fmtp).items())))


def to_fmtp(params: GenericParams) -> dict[str, str]:
    return dict(params.values)


def local(codec: Codec, limits: Limits) -> list[GenericParams]:
    return [from_fmtp(codec, codec.fmtp)]


def answer(codec: Codec, offered: GenericParams, limits: Limits) -> tuple[GenericParams, GenericParams]:
    return local(codec, limits)[0], offered


def common(ours: GenericParams, theirs: GenericParams) -> GenericParams:
    return ours


def from_h245(codec: Codec | None, value: Any) -> tuple[GenericParams, int | None]:
    return GenericParams(), None


def to_h245(codec: Codec, params: GenericParams, bitrate_cap: int | None) -> Any:
    raise ValueError(f"{codec.name} has no H.245 capability")
