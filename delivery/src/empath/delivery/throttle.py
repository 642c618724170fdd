"""Per-destination limits: concurrent sessions and messages per second for each domain.

Big providers throttle or block senders that open many sessions or send in bursts; these limits
keep every worker polite. `Limits` is what a worker needs of them. The service uses
`limits.Shared`, which holds them across all workers of an installation; `Throttle` holds them
in one process only (tests and single-process tools that have no limits bucket).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from empath.core import metrics


class Limits(Protocol):
    def slot(self, domain: str) -> AbstractAsyncContextManager[None]:
        """Hold one of the domain's slots while a delivery to it is in progress."""

    async def pace(self, domain: str) -> None:
        """Wait until the domain may get one more message."""


class Throttle:
    def __init__(self, *, connections: int, rate: float) -> None:
        self.connections = connections
        self.rate = rate
        self._slots: dict[str, asyncio.Semaphore] = collections.defaultdict(
            lambda: asyncio.Semaphore(self.connections)
        )
        self._next: dict[str, float] = {}
        self._lock: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's session slots."""
        if self._slots[domain].locked():
            metrics.delivery_rate_limited.add(1, {"limit": "connections"})
        async with self._slots[domain]:
            yield

    async def pace(self, domain: str) -> None:
        """Wait until the domain may get one more message (evenly spaced at `rate`/s)."""
        if self.rate <= 0:
            return
        async with self._lock[domain]:
            now = time.monotonic()
            start = max(now, self._next.get(domain, now))
            self._next[domain] = start + 1.0 / self.rate
            if start > now:
                metrics.delivery_rate_limited.add(1, {"limit": "rate"})
                await asyncio.sleep(start - now)
