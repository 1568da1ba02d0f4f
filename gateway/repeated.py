"""Logging a problem that recurs: the first time in full (with its traceback when asked), then
one line in every ``every`` with how often it was seen — a peer that sends the same bad packet
fifty times a second must not fill the disk, and the operator still sees that it goes on.

Keys are kept for the most recent ``keys`` problems only (a flood of distinct keys cannot grow
the table without bound)."""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class RepeatedLog:
    def __init__(self, logger: logging.Logger, every: int = 500, keys: int = 1024) -> None:
        self.logger = logger
        self.every = max(1, every)
        self.keys = keys
        self._seen: OrderedDict[Hashable, int] = OrderedDict()

    def __call__(self, key: Hashable, level: int, msg: str, *args: Any, exc_info: Any = False) -> None:
        n = self._seen.pop(key, 0)
        self._seen[key] = n + 1
        if len(self._seen) > self.keys:
            self._seen.popitem(last=False)
        if n % self.every == 0:
            suffix = f" (seen {n + 1} times)" if n else ""
            self.logger.log(level, msg + suffix, *args, exc_info=exc_info if n == 0 else False)

    def count(self, key: Hashable) -> int:
        return self._seen.get(key, 0)
