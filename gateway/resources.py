"""Where the shipped data folders (codecs/, dialplans/) live.

An installed distribution carries them inside the import package as
``gateway/_data/codecs`` and ``gateway/_data/dialplans`` (see setup.cfg's
``package_dir``); a plain source checkout has them at the repository root.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(kind: str) -> Path:
    """Return the folder holding the shipped ``kind`` data ("codecs" or "dialplans")."""
    if kind not in ("codecs", "dialplans"):
        raise ValueError(f"unknown data folder {kind!r}")
    try:
        spec = importlib.util.find_spec(f"gateway._data.{kind}")
    except ModuleNotFoundError:
        spec = None
    # gateway._data is a namespace package: take its real folder, not a MultiplexedPath.
    for location in (spec.submodule_search_locations or ()) if spec else ():
        if Path(location).is_dir():
            return Path(location)
    return _REPO_ROOT / kind


def default_dialplan() -> Path:
    return data_dir("dialplans") / "default.yaml"
