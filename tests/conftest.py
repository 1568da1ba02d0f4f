"""Shared test set-up: one event loop (Twisted on asyncio) for every test.

Tests that need real sockets drive Twisted by running the asyncio loop:
``run_for(0.2)`` or ``wait(deferred_or_awaitable, timeout=2)``.
"""
from __future__ import annotations

import asyncio

import pytest

from gateway import loop as _loop

LOOP = _loop.install()


def run_for(seconds: float) -> None:
    """Let the reactor run for ``seconds`` (timers and sockets fire meanwhile)."""
    LOOP.run_until_complete(asyncio.sleep(seconds))


def wait(thing, timeout: float = 5.0):
    """Run the loop until a Deferred/awaitable completes; return its result."""
    from twisted.internet.defer import Deferred

    if isinstance(thing, Deferred):
        thing = thing.asFuture(LOOP)
    return LOOP.run_until_complete(asyncio.wait_for(thing, timeout))


@pytest.fixture
def event_loop_runner():
    """Fixture form: ``event_loop_runner.run_for(s)`` / ``event_loop_runner.wait(d)``."""

    class Runner:
        pass

    r = Runner()
    r.loop = LOOP
    r.run_for = run_for
    r.wait = wait
    return r


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """An ephemeral port that is free right now (for a child process to bind)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()
