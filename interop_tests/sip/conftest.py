"""Fixtures for SIP interop tests: independent peers that always clean up.

- ``sipp``: a ``Sipp`` runner whose logs live in the test's tmp dir; background
  servers (``sipp.uas()``) are stopped at teardown.
- ``baresip_factory``: ``baresip_factory("b", auto_answer=True, ...)`` → a started
  ``Baresip``; every instance is stopped at teardown.
- ``pjsua_call``: the ``pjsua_call(uri, codecs=..., tone=..., seconds=...)``
  function (one pjsua2 child per call, always reaped).
- ``pjsua_answerer``: ``pjsua_answerer(tone=440, ...)`` → a started
  ``PjsuaAnswerer``, stopped at teardown.

A missing peer makes the test fail with the package to install.
The gateway fixture is not here: it belongs with the gateway's SIP adapter.
"""
from __future__ import annotations

import pytest

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.pjsua import PjsuaAnswerer
from interop_tests.peers.pjsua import pjsua_call as _pjsua_call
from interop_tests.peers.sipp import Sipp


@pytest.fixture
def sipp(tmp_path):
    runner = Sipp(tmp_path / "sipp")
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def baresip_factory(tmp_path):
    started: list[Baresip] = []
    counter = iter(range(1, 1000))

    def make(user: str = "a", **kwargs) -> Baresip:
        kwargs.setdefault("workdir", tmp_path / f"baresip-{user}-{next(counter)}")
        b = Baresip(user, **kwargs)
        started.append(b)
        return b

    try:
        yield make
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def pjsua_call(tmp_path):
    def call(uri: str, **kwargs):
        return _pjsua_call(uri, **kwargs)

    return call


@pytest.fixture
def pjsua_answerer():
    started: list[PjsuaAnswerer] = []

    def make(**kwargs) -> PjsuaAnswerer:
        a = PjsuaAnswerer(**kwargs)
        started.append(a)
        return a

    try:
        yield make
    finally:
        for a in started:
            a.stop()
