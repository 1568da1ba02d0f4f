"""Fixtures for the WebRTC cases: the target's HTTPS base URL, aiortc clients, the H.323 fixtures.

The suite's own WebRTC clients (aiortc, in this process) gather ICE host candidates on loopback
only, like the gateway the suite starts (``ice_hosts: 127.0.0.1``): tests stay on 127.0.0.1.
"""
from __future__ import annotations

import asyncio

import pytest

from interop_tests.h323.conftest import h323, h323_endpoint, h323_run  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def https(target) -> str:
    if target.https_port is None:
        pytest.fail("the WebRTC cases need the target's HTTPS port: run them against the Cầu the suite starts")
    from gateway.webrtc import hooks

    hooks.set_host_addresses(["127.0.0.1"])
    return f"https://{target.host}:{target.https_port}"


@pytest.fixture
def webrtc_clients(h323_run):
    from interop_tests.peers.webrtc_client import WebRtcClient

    made: list[WebRtcClient] = []

    def make(**kw) -> WebRtcClient:
        c = WebRtcClient(**kw)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.resource:
            try:
                h323_run(c.delete(), timeout=10)
            except Exception:
                pass
        h323_run(c.close(), timeout=10)
    h323_run(asyncio.sleep(0.3))
