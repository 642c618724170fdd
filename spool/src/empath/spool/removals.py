"""Bodies of finished messages, removed from the bucket in batches.

Every message that finishes (delivered, failed, deleted by an operator) leaves a body to
remove. One DELETE request per message was a third of the spool's CPU on a relay, for work
nobody waits on; so keys are collected and removed with one DeleteObjects request (up to
1,000 keys) every second, or at once when a batch is full. A request costs the spool about
1.7 ms of CPU whatever it carries (the S3 client, its HTTP, the thread hand-off) and about 7 us
a key: at 150 messages a second, a flush each 0.2 s took 70 us a message, each second 19 us.

What is not removed yet when the spool dies stays in the bucket, and so does a body whose
removal failed while the store was away: the retention purge removes a finished record's body
once more before it removes the record (a no-op when the body is gone), so no body outlives
its record's retention.

Ingress leaves an empty marker under `void/` when it removed a body after answering 451
(`outcomes.void`); the spool removes it when it drops that message, and a sweep each hour
removes markers of messages whose event never reached JetStream, once they are two days old
(listing the markers' prefix: the bucket's bodies are never listed for this).

Bodies no record names (orphans: ingress killed between storing a body and publishing its
event, or a forged event's body) are found by an audit each hour, which lists the bodies of the
days from a day ago back to the longest a message may live (`audit`), but removes one only when
all of this holds: it is at least a day old, the spool's intake has taken every `received`
event there is (none waiting, none unacknowledged: no event can still name it), and the queue
has no record of its id, read from the bucket itself, not from the spool's view. So no body a
record needs is ever removed; an orphan goes within a day or two.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

from empath.core import errors, ids, periodic, store

log = logging.getLogger("empath.spool.removals")

# How often collected keys are removed, and how many make a request go at once.
FLUSH_SECONDS = 1.0
BATCH = 500
# S3 takes at most this many keys in one DeleteObjects request.
REQUEST_LIMIT = 1000
# Keys kept while the store is away; past this the oldest are left to the retention purge.
PENDING_LIMIT = 100_000
# How often void markers are swept, and how old one must be to go.
SWEEP_SECONDS = 3600.0
VOID_KEEP = timedelta(days=2)
_DATED = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/")
# How old a body must be before an audit may take it for an orphan.
ORPHAN_AGE = timedelta(days=1)
_BODY = re.compile(rf"{store.BODY_PREFIX}\d{{4}}/\d{{2}}/\d{{2}}/(?P<id>[^/]+)\.eml")


def dated(key: str) -> date | None:
    """The day in a key made by `store.body_key` (None for any other key)."""
    found = _DATED.search(key)
    if found is None:
        return None
    try:
        return date(*(int(part) for part in found.groups()))
    except ValueError:
        return None


class Removals:
    def __init__(self, objects: store.ObjectStore) -> None:
        self.objects = objects
        self.pending: dict[str, None] = {}  # insertion-ordered, without repeats
        self.full = asyncio.Event()

    def add(self, key: str) -> None:
        """Remove this body soon."""
        self.pending[key] = None
        if len(self.pending) > PENDING_LIMIT:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            log.warning("too many bodies waiting for removal: %s left to the purge", oldest)
        if len(self.pending) >= BATCH:
            self.full.set()

    async def flush(self) -> None:
        """Remove what is collected; keys that could not be removed stay for the next flush."""
        while self.pending:
            keys = list(self.pending)[:REQUEST_LIMIT]
            failed = set(await self.objects.delete_many(keys))
            for key in keys:
                if key not in failed:
                    self.pending.pop(key, None)
            if failed:
                log.warning("%d bodies not removed yet, trying again", len(failed))
                return
            log.debug("removed %d bodies", len(keys))

    async def sweep(self, now: datetime) -> int:
        """Queue the removal of void markers older than `VOID_KEEP`; how many."""
        cutoff = (now - VOID_KEEP).date()
        old = [
            key
            for key in await self.objects.keys(store.VOID_PREFIX)
            if (day := dated(key)) is not None and day < cutoff
        ]
        for key in old:
            self.add(key)
        return len(old)

    async def audit(
        self,
        now: datetime,
        *,
        oldest: datetime,
        caught_up: Callable[[], Awaitable[bool]],
        recorded: Callable[[str], Awaitable[bool]],
    ) -> list[str]:
        """Queue the removal of orphan bodies stored between `oldest` and a day ago (see the
        module's docstring for when one is an orphan); their keys."""
        if not await caught_up():
            log.info("orphan audit skipped: the intake has received events still to take")
            return []
        newest = (now - ORPHAN_AGE).date()
        orphans = []
        day = oldest.date()
        while day < newest:
            for key in await self.objects.keys(store.day_prefix(day)):
                found = _BODY.fullmatch(key)
                if found and ids.is_valid(found["id"]) and not await recorded(found["id"]):
                    orphans.append(key)
            day += timedelta(days=1)
        for key in orphans:
            self.add(key)
        if orphans:
            log.warning(
                "removing %d bodies no record names (orphans), e.g. %s",
                len(orphans),
                ", ".join(orphans[:5]),
            )
        return orphans

    async def sweeping(
        self,
        stop: asyncio.Event,
        *,
        lifetime: timedelta,
        caught_up: Callable[[], Awaitable[bool]],
        recorded: Callable[[str], Awaitable[bool]],
    ) -> None:
        async def sweep() -> None:
            now = datetime.now(UTC)
            await self.sweep(now)
            await self.audit(
                now, oldest=now - lifetime - VOID_KEEP, caught_up=caught_up, recorded=recorded
            )

        await periodic.every(
            SWEEP_SECONDS,
            sweep,
            stop=stop,
            log=log,
            what="sweeping void markers and orphan bodies",
            warn_once=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until `stop`, then once more (what is left stays for the purge)."""
        await periodic.every(
            FLUSH_SECONDS,
            self.flush,
            stop=stop,
            log=log,
            what="removing bodies",
            warn_once=True,
            wake=self.full,
        )
        try:
            await self.flush()
        except errors.EmpathError as error:
            log.warning("%d bodies left to the purge: %s", len(self.pending), error)
