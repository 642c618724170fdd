"""A live view of the queue state: every record, in memory, kept current by a KV watch.

KV stays the only source of truth: the view is rebuilt from it at start (and after any lost
watch), and every change goes through KV with compare-and-set, never through the view. The
view only answers questions fast (list, counts, what is due) without reading every record per
request; with 100,000 messages that is the difference between milliseconds and seconds.

A watch does not survive a NATS server restart: the client reconnects, but the watch's
consumer is gone with the old server, and the client only notices after missing two of its
heartbeats (about ten seconds, during which the scheduler, reading this view, dispatches
nothing). So the view also follows the connection's reconnect count and rebuilds the watch
as soon as it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from pydantic import ValidationError

from empath.core import names, periodic, queue

log = logging.getLogger("empath.spool.view")

# How often a quiet watch looks whether the connection was re-established meanwhile.
RECONNECT_CHECK_SECONDS = 0.2


class QueueView:
    def __init__(self, kv: KeyValue, *, connection: NATS | None = None) -> None:
        self.kv = kv
        self.connection = connection
        self.entries: dict[str, queue.Entry] = {}
        self.ready = asyncio.Event()

    def snapshot(self) -> list[queue.Entry]:
        """Every record, oldest first (queue ids sort by time)."""
        return sorted(self.entries.values(), key=lambda entry: entry.id)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the bucket until `stop`; a lost watch is rebuilt from scratch a second later,
        one lost to a reconnect at once."""
        await periodic.every(
            1.0, lambda: self._follow(stop), stop=stop, log=log, what="queue watch lost, rebuilding"
        )

    def _reconnects(self) -> int:
        if self.connection is None:
            return 0
        return int(self.connection.stats["reconnects"])

    async def _follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self._watch(stop):
                return
            log.warning("reconnected to NATS: rebuilding the queue watch")

    async def _watch(self, stop: asyncio.Event) -> bool:
        """Follow one watch until `stop` (False) or until the connection was re-established
        (True: the watch is dead and must be replaced)."""
        reconnects = self._reconnects()
        watcher = await self.kv.watch(f"{names.QUEUE_KEY_PREFIX}>")
        fresh: dict[str, queue.Entry] = {}
        building = True
        try:
            while not stop.is_set():
                if self._reconnects() != reconnects:
                    return True
                try:
                    update = await watcher.updates(  # type: ignore[no-untyped-call]
                        timeout=RECONNECT_CHECK_SECONDS
                    )
                except nats.errors.TimeoutError:
                    continue
                if update is None:  # the current values are all in
                    self.entries, building = fresh, False
                    self.ready.set()
                    continue
                target = fresh if building else self.entries
                message_id = update.key.removeprefix(names.QUEUE_KEY_PREFIX)
                if update.operation in {"DEL", "PURGE"} or not update.value:
                    target.pop(message_id, None)
                    continue
                try:
                    target[message_id] = queue.Entry.model_validate_json(update.value)
                except ValidationError as error:
                    log.error("unreadable record %s: %s", update.key, error)
            return False
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]
