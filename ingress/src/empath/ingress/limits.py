"""Connection limits, and the set of live sessions that graceful shutdown drains."""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol


class Session(Protocol):
    @property
    def in_transaction(self) -> bool: ...

    def close_idle(self) -> None: ...

    def abort(self) -> None: ...


class Connections:
    """Counts sessions in total and per client IP; drains them on shutdown."""

    def __init__(self, *, total: int, per_ip: int) -> None:
        self.max_total = total
        self.max_per_ip = per_ip
        self.draining = False
        self._sessions: dict[Session, str] = {}
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._empty = asyncio.Event()
        self._empty.set()

    def admit(self, session: Session, ip: str) -> str | None:
        """Register a session; returns why it is refused, or None."""
        if self.draining:
            return "draining"
        if len(self._sessions) >= self.max_total:
            return "total"
        if self._per_ip[ip] >= self.max_per_ip:
            return "per_ip"
        self._sessions[session] = ip
        self._per_ip[ip] += 1
        self._empty.clear()
        return None

    def release(self, session: Session) -> None:
        ip = self._sessions.pop(session, None)
        if ip is None:
            return
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if not self._sessions:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    async def drain(self, grace: float) -> None:
        """Close idle sessions now, let transactions finish for `grace` seconds, then abort."""
        self.draining = True
        for session in list(self._sessions):
            if not session.in_transaction:
                session.close_idle()
        try:
            await asyncio.wait_for(self._empty.wait(), grace)
        except TimeoutError:
            for session in list(self._sessions):
                session.abort()
            await asyncio.sleep(0)
