"""Fixtures for H.323 interop cases: where the target's H.225.0 and RAS listen, and test endpoints.

``h323`` finds the addresses in the banner of the Cầu the suite started
(``H.323 call signalling listening on HOST:PORT/tcp`` and ``H.323 RAS
(gatekeeper) listening on HOST:PORT/udp`` in its stdout, ``cau.out``), or, for
another system, from the options ``--h323-target HOST:PORT`` (call signalling) and
``--gatekeeper HOST:PORT`` (RAS).

``h323_endpoint(...)`` makes :class:`~interop_tests.h323.endpoint.H323TestEndpoint`
instances that are all hung up and closed at teardown; ``h323_run(coro)`` runs
a coroutine on the one event loop (Twisted on asyncio).
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import pytest

from interop_tests.h323.endpoint import H323TestEndpoint


@dataclass
class H323Target:
    host: str
    port: int                                   # H.225.0 call signalling (TCP)
    gatekeeper: tuple[str, int] | None = None   # RAS (UDP)
    local_cau: bool = False


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@pytest.fixture(scope="session")
def h323(target, request: pytest.FixtureRequest) -> H323Target:
    opt = request.config.getoption("--h323-target")
    gk = request.config.getoption("--gatekeeper")
    if opt or gk:
        host, port = _hostport(opt) if opt else (_hostport(gk)[0], 1720)
        return H323Target(host, port, _hostport(gk) if gk else None, local_cau=False)
    if not target.is_local_cau:
        pytest.fail("an H.323 system outside the suite is named with --h323-target HOST:PORT (and --gatekeeper)")
    out = target.log_path.parent / "cau.out"
    deadline = time.monotonic() + 10
    cs = ras = None
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace") if out.exists() else ""
        cs = re.search(r"H\.323 call signalling listening on ([\d.]+):(\d+)/tcp", text)
        ras = re.search(r"H\.323 RAS \(gatekeeper\) listening on ([\d.]+):(\d+)/udp", text)
        if cs:
            break
        time.sleep(0.1)
    if not cs:
        pytest.fail(f"Cầu did not report 'H.323 call signalling listening on HOST:PORT/tcp' in {out}")
    return H323Target(cs.group(1), int(cs.group(2)), (ras.group(1), int(ras.group(2))) if ras else None,
                      local_cau=True)


def _loop() -> asyncio.AbstractEventLoop:
    from gateway import loop as _l

    return _l.install()


@pytest.fixture
def h323_run():
    loop = _loop()

    def run(coro, timeout: float = 30.0):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    return run


@pytest.fixture
def h323_endpoint(h323_run):
    made: list[H323TestEndpoint] = []

    def make(*args, **kw) -> H323TestEndpoint:
        ep = H323TestEndpoint(*args, **kw)
        made.append(ep)
        return ep

    yield make
    for ep in made:
        h323_run(ep.close())
