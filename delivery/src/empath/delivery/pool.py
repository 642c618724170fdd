"""Connection reuse: an open session with an MX host serves the next jobs for it.

A session whose last transaction ended with DATA answered goes on with the next MAIL at once;
one whose transaction stopped earlier (MAIL or every RCPT refused) is reset with RSET first,
and replaced when RSET is not answered 250. A remote may close a kept session at any time: the
worker then carries the message on a new one (`Worker._session`).

A session is reused for at most `messages_per_connection` transactions and is closed after
`idle_timeout` seconds without use. Closing the pool at shutdown waits at most `quit_timeout`
for the remotes to answer QUIT: a remote that never answers must not hold the shutdown up.
Sessions are kept per (MX address, port, TLS policy): a session opened under one policy never
carries mail that asks for another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from empath.core import periodic
from empath.delivery.client import Connection
from empath.delivery.resolver import Hop

log = logging.getLogger("empath.delivery.pool")

Key = tuple[str, int, str]


class Pool:
    def __init__(
        self, *, messages_per_connection: int, idle_timeout: float, quit_timeout: float = 5.0
    ) -> None:
        self.messages_per_connection = messages_per_connection
        self.idle_timeout = idle_timeout
        self.quit_timeout = quit_timeout
        self._idle: dict[Key, collections.deque[Connection]] = collections.defaultdict(
            collections.deque
        )
        self.opened = 0
        self.reused = 0
        self._reaper: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def start(self) -> None:
        self._reaper = asyncio.create_task(
            periodic.every(
                min(self.idle_timeout / 2, 5.0),
                self._reap,
                stop=self._closing,
                log=log,
                what="closing idle sessions",
                wait_first=True,
            ),
            name="delivery-pool-reaper",
        )

    async def acquire(
        self,
        hop: Hop,
        policy: str,
        opener: Callable[[], Awaitable[Connection]],
        *,
        fresh: bool = False,
    ) -> Connection:
        """A kept session for the host and policy, or a new one (always new when `fresh`)."""
        idle = None if fresh else self._idle.get((hop.address, hop.port, policy))
        while idle:
            connection = idle.pop()
            if (
                connection.usable
                and not self._stale(connection)
                and (connection.clean or await connection.reset())
            ):
                self.reused += 1
                return connection
            await connection.close()
        connection = await opener()
        self.opened += 1
        return connection

    async def release(self, connection: Connection, policy: str, *, reusable: bool) -> None:
        if reusable and connection.usable and connection.messages < self.messages_per_connection:
            connection.last_used = time.monotonic()
            self._idle[(connection.hop.address, connection.hop.port, policy)].append(connection)
        else:
            await connection.close()

    def _stale(self, connection: Connection) -> bool:
        return time.monotonic() - connection.last_used > self.idle_timeout

    async def _reap(self) -> None:
        for key, idle in list(self._idle.items()):
            keep: collections.deque[Connection] = collections.deque()
            for connection in idle:
                if self._stale(connection) or not connection.usable:
                    await connection.close()
                else:
                    keep.append(connection)
            if keep:
                self._idle[key] = keep
            else:
                self._idle.pop(key, None)

    async def close(self) -> None:
        """Stop the reaper and QUIT every idle session, all within `quit_timeout`.

        The reaper is cancelled, not let finish: it QUITs stale sessions one by one, each
        bounded only by the command timeout. The sessions are then QUIT together, and those
        whose remote has not answered in time are dropped (their socket closed).
        """
        self._closing.set()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle = [connection for kept in self._idle.values() for connection in kept]
        self._idle.clear()
        if not idle:
            return
        quits = [asyncio.create_task(connection.close()) for connection in idle]
        done, late = await asyncio.wait(quits, timeout=self.quit_timeout)
        for quitting in late:
            quitting.cancel()  # the connection's own `finally` closes the socket
        await asyncio.gather(*late, return_exceptions=True)
        for quitting in done:
            if not quitting.cancelled() and quitting.exception() is not None:
                log.warning("closing an idle session failed: %r", quitting.exception())
