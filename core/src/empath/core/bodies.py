"""Where a message's body is: in the bucket, or, for a small message, in the event that brought it.

Ingress does not store a small body (up to `EMPATH_INLINE_BODY_LIMIT`) in the bucket: the
`received` event carries it (`events.Received.stored` is false), and JetStream keeps that event
as durably as it keeps the queue state (the same replicas, written to disk before ingress
answers 250). The record then names the event by its stream sequence (`queue.Entry.body_seq`).
The first attempt carries the body in its job, so a message delivered at once costs the bucket
nothing: no PUT, no GET, no DELETE. A message that has to wait is stored in the bucket before its
record says it waits (`Bodies.keep`), since the stream keeps its events a week
(`names.RECEIVED_STREAM`) while a message may wait longer. Whoever reads a body (a DSN, a job
published again, `queue view`) asks here, and gets it from wherever it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from empath.core import bus, errors, events, logs, names, periodic, queue, store

log = logging.getLogger("empath.core.bodies")

# What a spool that reads bodies from their events says in its heartbeat (`Bus.heartbeat`).
FEATURE = "body-in-event"


def spool_heartbeat() -> dict[str, Any]:
    """The spool's heartbeat details: it reads a body from its event (`queue.Entry.body_seq`)."""
    return {"features": [FEATURE]}


class SpoolsReady:
    """Whether every spool running reads bodies from events, as their heartbeats say: only
    then does ingress leave a small body out of the bucket. A spool of an earlier version
    would rewrite a record without its `body_seq` (records are read tolerantly) and then look
    for the body in the bucket; so during a rolling upgrade, while any such spool still beats
    (or none beats at all), every body is stored as before, and for `settle` seconds after one
    was last seen (a heartbeat's lifetime and one beat: an older spool cut off from NATS that
    long, whose entry expired, has beaten again by then when it comes back). Looked at every
    `every` seconds (every second until ready, so a new installation starts storing none
    within seconds). The gap left: an older spool that starts, or comes back after more than
    `settle`, may take a message's outcome in the seconds before ingress sees its heartbeat."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        every: float = 5.0,
        settle: float = names.HEARTBEAT_TTL_SECONDS + 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.every = every
        self.settle = settle
        self.clock = clock
        self.ready = False
        self.older_seen: float | None = None  # when a spool that does not read events beat

    async def look(self) -> bool:
        beats = await bus.kv_items(self.kv, "spool.>")
        if not all(_reads_events(value) for _, value in beats):
            self.older_seen = self.clock()
        recently = self.older_seen is not None and self.clock() - self.older_seen < self.settle
        ready = bool(beats) and not recently
        if ready and not self.ready:
            log.info(
                "every spool reads bodies from their events: a message under "
                "EMPATH_INLINE_BODY_LIMIT is no longer stored in the bucket unless it waits"
            )
        elif self.ready and not ready:
            log.warning(
                "a spool that does not read bodies from their events is running (or none "
                "is): every body is stored in the bucket again"
            )
        self.ready = ready
        return ready

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.look()
            except Exception as error:  # whatever it was, storing is always safe
                if self.ready:
                    log.warning(
                        "cannot read the spools' heartbeats (%r): every body is stored in the "
                        "bucket until it can",
                        error,
                    )
                self.ready = False  # not known: store, as is always safe
            await periodic.pause(stop, self.every if self.ready else min(self.every, 1.0))


def _reads_events(value: bytes) -> bool:
    try:
        beat = json.loads(value)
    except ValueError:
        return False
    features = beat.get("features") if isinstance(beat, dict) else None
    return isinstance(features, list) and FEATURE in features


class Bodies:
    def __init__(self, *, objects: store.ObjectStore, js: JetStreamContext) -> None:
        self.objects = objects
        self.js = js

    async def get(self, entry: queue.Entry, *, limit: int | None = None) -> bytes:
        """The body (with `limit`, its first `limit` bytes); `errors.NotFound` when it is gone."""
        if entry.body_seq is None:
            return await self.objects.get(entry.body_key, limit=limit)
        body = await self.carried(entry)
        return body if limit is None else body[:limit]

    async def carried(self, entry: queue.Entry) -> bytes:
        """The body as the message's `received` event carries it (`entry.body_seq`)."""
        if entry.body_seq is None:
            raise errors.NotFound(f"{entry.id}: the body is in the bucket, not in its event")
        stream = names.RECEIVED_STREAM.name
        try:
            found = await self.js.get_msg(stream, seq=entry.body_seq)
        except nats.js.errors.NotFoundError:
            raise errors.NotFound(
                f"{entry.id}: no event at sequence {entry.body_seq} of {stream} (past its age?)"
            ) from None
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as error:
            raise errors.BusUnavailable(
                f"cannot read the body of {entry.id} from {stream}: {error!r}"
            ) from error
        try:
            event = events.decode(found.data or b"", events.Received)
        except errors.EmpathError as error:
            raise errors.NotFound(
                f"{entry.id}: sequence {entry.body_seq} of {stream} is unreadable: {error}"
            ) from None
        if event.id != entry.id or event.body is None:
            # Not the event the record was made from: never deliver another message's body.
            raise errors.NotFound(
                f"{entry.id}: sequence {entry.body_seq} of {stream} does not carry its body"
            )
        return event.body

    async def keep(self, entry: queue.Entry, body: bytes | None = None) -> queue.Entry:
        """The record with its body in the bucket: stored now if only its event carried it
        (`body`: the bytes, when the caller has them in hand). Safe to repeat: the same bytes
        under the same key. A body that is gone (it should not be) is logged and the record
        returned as it is: its next attempt then fails for want of a body, and the sender
        hears of it."""
        if entry.body_seq is None:
            return entry
        if body is None:
            try:
                body = await self.carried(entry)
            except errors.NotFound as error:
                logs.for_message(log, entry.id).error("body lost: %s", error)
                return entry
        await self.objects.put(entry.body_key, body)
        return entry.model_copy(update={"body_seq": None})
