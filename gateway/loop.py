"""One event loop: Twisted on the asyncio reactor, uvloop underneath where available.

``install()`` must run before anything imports ``twisted.internet.reactor``.
It is idempotent. Tests call it from ``tests/conftest.py``; they may drive
Twisted I/O by running the asyncio loop (``run_until_complete``) without
``reactor.run()``, because the asyncio reactor registers its readers and
timers on that loop.
"""
from __future__ import annotations

import asyncio
import os
import sys

_installed_loop: asyncio.AbstractEventLoop | None = None


def install(use_uvloop: bool | None = None) -> asyncio.AbstractEventLoop:
    """Install the asyncio reactor (on uvloop unless CAU_NO_UVLOOP=1) and return its loop."""
    global _installed_loop
    if _installed_loop is not None:
        return _installed_loop
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        loop = getattr(reactor, "_asyncioEventloop", None)
        if loop is None:
            raise RuntimeError("a non-asyncio Twisted reactor was installed before gateway.loop.install()")
        _installed_loop = loop
        return loop
    if use_uvloop is None:
        use_uvloop = os.environ.get("CAU_NO_UVLOOP", "") not in ("1", "true", "yes")
    loop: asyncio.AbstractEventLoop
    if use_uvloop:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    _installed_loop = loop
    return loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    mod = type(loop).__module__
    return "uvloop" if mod.startswith("uvloop") else "asyncio"
