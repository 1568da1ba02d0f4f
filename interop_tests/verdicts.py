"""Verdicts beyond pass and fail, for the report (gateway.conformance reads them back):

- :func:`not_applicable` — the target does not offer what the case checks (no video, not a
  registrar, no session timers in its OPTIONS answer): NOT APPLICABLE, with why;
- :func:`inconclusive` — the case could not judge (the test machine stalled through every retry,
  a peer did not start): INCONCLUSIVE, with why — never a false FAIL.

Against Cầu itself (profile ``cau``) neither is allowed: Cầu must do everything its suite checks,
so either one fails the case there.
"""
from __future__ import annotations

import pytest

NA = "NOT APPLICABLE: "
INCONCLUSIVE = "INCONCLUSIVE: "


def _profile() -> str:
    import interop_tests.conftest as c

    return getattr(c, "PROFILE", "cau")


def not_applicable(why: str) -> None:
    if _profile() == "cau":
        pytest.fail(f"Cầu must support this, but: {why}")
    pytest.skip(NA + why)


def inconclusive(why: str) -> None:
    if _profile() == "cau":
        pytest.fail(f"no judgement possible: {why}")
    pytest.skip(INCONCLUSIVE + why)
