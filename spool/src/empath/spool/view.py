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

The spool's own writes (`records.Records`) are announced to the view before they are made
(`QueueView.expect`), with the record in hand: when the watch brings back exactly the bytes
written, the view takes that record instead of parsing it again. The watch still delivers
every change, in order, so the view is what the bucket says, as before; only a parse is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from pydantic import ValidationError

from empath.core import addresses, names, periodic, queue
from empath.spool import records

log = logging.getLogger("empath.spool.view")

# How often a quiet watch looks whether the connection was re-established meanwhile.
RECONNECT_CHECK_SECONDS = 0.2

# How many of the records last taken in the index keeps parsed (about 6 KB each).
PARSED_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Summary:
    """What the view keeps of a record: the fields its questions need, and the record's JSON
    to read the rest from when asked (a parsed record took about 6 KB; this about 1 KB, so
    100,000 queued messages fit in about 100 MB)."""

    id: str
    state: queue.State
    held: bool
    attempts: int
    received_at: datetime
    updated_at: datetime | None
    next_attempt: datetime | None
    lease_until: datetime | None
    sender: str
    domains: tuple[str, ...]  # of every recipient
    open_domains: tuple[str, ...]  # of the recipients still open
    raw: bytes

    @classmethod
    def of(cls, entry: queue.Entry, raw: bytes | None = None) -> Summary:
        # Each domain once, in order, the strings shared between records.
        every: dict[str, None] = {}
        still_open: dict[str, None] = {}
        for recipient in entry.recipients:
            domain = sys.intern(addresses.domain_of(recipient.address))
            every[domain] = None
            if recipient.open:
                still_open[domain] = None
        return cls(
            id=entry.id,
            state=entry.state,
            held=entry.held,
            attempts=entry.attempts,
            received_at=entry.received_at,
            updated_at=entry.updated_at,
            next_attempt=entry.next_attempt,
            lease_until=entry.lease_until,
            sender=entry.sender,
            domains=tuple(every),
            open_domains=tuple(still_open),
            raw=entry.model_dump_json().encode() if raw is None else raw,
        )

    def entry(self) -> queue.Entry:
        """The whole record."""
        return queue.Entry.model_validate_json(self.raw)

    @property
    def finished(self) -> bool:
        return self.state in {queue.State.DELIVERED, queue.State.FAILED}

    @property
    def has_open(self) -> bool:
        """Some recipient is still to be delivered (as `queue.Entry.has_open`)."""
        return bool(self.open_domains)


def waiting(entry: Summary) -> bool:
    """Whether the record waits for an attempt the scheduler may start when it is due."""
    return (
        entry.state in {queue.State.QUEUED, queue.State.DEFERRED}
        and not entry.held
        and entry.next_attempt is not None
    )


def finished_at(entry: Summary) -> datetime:
    return entry.updated_at or entry.received_at


class Index:
    """The records, and what the scheduler asks of them without walking them all: which are
    due (a heap by next attempt), which are out for delivery (a set), which finished when (a
    heap by finishing time, for the retention purge).

    The heaps are lazy: a change pushes the record's new time and leaves the old one, which is
    skipped when it comes up (its record has moved on); they are rebuilt when stale items
    outnumber the records."""

    def __init__(self) -> None:
        self.entries: dict[str, Summary] = {}
        self.revisions: dict[str, int] = {}
        # The last records taken in, parsed, with their revisions: the outcome of an attempt
        # usually comes back seconds after its claim was written, and finds it here instead
        # of parsing the summary's JSON again. Bounded, oldest dropped first.
        self._parsed: dict[str, tuple[int, queue.Entry]] = {}
        self.delivering: set[str] = set()
        self._due: list[tuple[datetime, str]] = []
        self._finished: list[tuple[datetime, str]] = []

    def apply(
        self,
        message_id: str,
        entry: queue.Entry | None,
        revision: int = 0,
        *,
        raw: bytes | None = None,
    ) -> bool:
        """Take in a change (None: the record is gone); True when the record is due now."""
        if entry is None:
            self.entries.pop(message_id, None)
            self.revisions.pop(message_id, None)
            self._parsed.pop(message_id, None)
            self.delivering.discard(message_id)
            return False
        summary = Summary.of(entry, raw)
        self.entries[message_id] = summary
        self.revisions[message_id] = revision
        self._parsed.pop(message_id, None)
        self._parsed[message_id] = (revision, entry)
        if len(self._parsed) > PARSED_KEPT:
            del self._parsed[next(iter(self._parsed))]
        if summary.state == queue.State.DELIVERING:
            self.delivering.add(message_id)
        else:
            self.delivering.discard(message_id)
        due_now = False
        if waiting(summary):
            assert summary.next_attempt is not None
            heapq.heappush(self._due, (summary.next_attempt, message_id))
            due_now = summary.next_attempt <= datetime.now(UTC)
        elif summary.finished:
            heapq.heappush(self._finished, (finished_at(summary), message_id))
        if len(self._due) + len(self._finished) > 2 * len(self.entries) + 1024:
            self._reindex()
        return due_now

    def _reindex(self) -> None:
        self._due = [
            (e.next_attempt, i)
            for i, e in self.entries.items()
            if waiting(e) and e.next_attempt is not None
        ]
        self._finished = [(finished_at(e), i) for i, e in self.entries.items() if e.finished]
        heapq.heapify(self._due)
        heapq.heapify(self._finished)

    def take_due(self, now: datetime) -> list[queue.Entry]:
        """The records due at `now`, each once, taken off the heap: one the scheduler could not
        dispatch goes back with `again`."""
        taken: dict[str, queue.Entry] = {}
        while self._due and self._due[0][0] <= now:
            when, message_id = heapq.heappop(self._due)
            summary = self.entries.get(message_id)
            if summary is not None and waiting(summary) and summary.next_attempt == when:
                taken[message_id] = summary.entry()
        return list(taken.values())

    def again(self, entry: queue.Entry) -> None:
        """Put back a record taken as due that is still waiting (its dispatch failed)."""
        current = self.entries.get(entry.id)
        if current is not None and waiting(current) and current.next_attempt is not None:
            heapq.heappush(self._due, (current.next_attempt, entry.id))

    def take_expired(self, cutoff: datetime) -> list[Summary]:
        """The finished records that finished at or before `cutoff`, taken off the heap."""
        taken: dict[str, Summary] = {}
        while self._finished and self._finished[0][0] <= cutoff:
            when, message_id = heapq.heappop(self._finished)
            summary = self.entries.get(message_id)
            if summary is not None and summary.finished and finished_at(summary) == when:
                taken[message_id] = summary
        return list(taken.values())

    def in_delivery(self) -> list[Summary]:
        return [self.entries[i] for i in self.delivering if i in self.entries]

    def known(self, message_id: str) -> records.Known | None:
        """A record with the revision it was seen at (for a write without a read first)."""
        summary = self.entries.get(message_id)
        if summary is None:
            return None
        revision = self.revisions.get(message_id, 0)
        parsed = self._parsed.get(message_id)
        if parsed is not None and parsed[0] == revision:
            return parsed[1], revision
        return summary.entry(), revision


class QueueView:
    def __init__(self, kv: KeyValue | None = None, *, connection: NATS | None = None) -> None:
        self.kv = kv
        self.connection = connection
        self.index = Index()
        self.ready = asyncio.Event()
        # Set when a record becomes due now (a new message): the scheduler need not wait for
        # its next tick.
        self.due_now = asyncio.Event()
        # Writes of this spool's on their way, by message id: their bytes and their record.
        self._expected: dict[str, tuple[bytes, queue.Entry]] = {}

    @property
    def entries(self) -> dict[str, Summary]:
        return self.index.entries

    def apply(
        self,
        message_id: str,
        entry: queue.Entry | None,
        revision: int = 0,
        *,
        raw: bytes | None = None,
    ) -> None:
        if self.index.apply(message_id, entry, revision, raw=raw):
            self.due_now.set()

    def expect(self, message_id: str, entry: queue.Entry, data: bytes) -> None:
        """This spool is about to write `entry` as `data` (`records.Records`): when the watch
        brings these bytes back, it takes `entry` as it is, unparsed. Bounded: an expectation
        of a write that never shows (its spool's write failed) is dropped in time."""
        self._expected.pop(message_id, None)
        self._expected[message_id] = (data, entry)
        if len(self._expected) > PARSED_KEPT:
            del self._expected[next(iter(self._expected))]

    def forget(self, message_id: str, data: bytes) -> None:
        """The write announced with `data` did not happen."""
        found = self._expected.get(message_id)
        if found is not None and found[0] == data:
            del self._expected[message_id]

    def snapshot(self) -> list[Summary]:
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
        assert self.kv is not None
        watcher = await self.kv.watch(f"{names.QUEUE_KEY_PREFIX}>")
        # The updates are read by a task of their own, each as it comes (no timeout per
        # update); this one looks at the connection every so often.
        reading = asyncio.create_task(self._read(watcher))
        try:
            while not reading.done():
                if stop.is_set():
                    return False
                if self._reconnects() != reconnects:
                    return True
                await asyncio.wait({reading}, timeout=RECONNECT_CHECK_SECONDS)
            reading.result()  # its error, if it failed
            return False
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _read(self, watcher: KeyValue.KeyWatcher) -> None:
        """Take in the current records (in a fresh index, which replaces the view's once they
        are all in), then every change."""
        fresh: Index | None = Index()
        async for update in watcher:
            if update is None:  # the current values are all in
                if fresh is not None:
                    self.index, fresh = fresh, None
                    self.ready.set()
                    self.due_now.set()
                continue
            message_id = update.key.removeprefix(names.QUEUE_KEY_PREFIX)
            entry: queue.Entry | None = None
            if update.operation not in {"DEL", "PURGE"} and update.value:
                expected = self._expected.get(message_id)
                if expected is not None and expected[0] == update.value:
                    del self._expected[message_id]
                    entry = expected[1]  # as this spool wrote it
                else:
                    try:
                        entry = queue.Entry.model_validate_json(update.value)
                    except ValidationError as error:
                        log.error("unreadable record %s: %s", update.key, error)
                        continue
            raw = update.value if entry is not None else None
            if fresh is not None:
                fresh.apply(message_id, entry, update.revision or 0, raw=raw)
            else:
                self.apply(message_id, entry, update.revision or 0, raw=raw)
