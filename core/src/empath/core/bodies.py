"""Where a message's body is: in the bucket, or, for a small message, in the event that brought it.

Ingress does not store a small body (up to `EMPATH_INLINE_BODY_LIMIT`) in the bucket: the
`received` event carries it (`events.Received.stored` is false), and JetStream keeps that event
as durably as it keeps the queue state (the same replicas, written to disk before ingress
answers 250). The record then names the event by its stream sequence (`queue.Entry.body_seq`).
The first attempt carries the body in its job, so a message delivered at once costs the bucket
nothing: no PUT, no GET, no DELETE. A message that has to wait is stored in the bucket before its
record says it waits (`Bodies.keep`), since the stream keeps its events a week
(`names.RECEIVED_STREAM`) while a message may wait longer. Whoever reads a body (a DSN, a job
published again, `queue show`) asks here, and gets it from wherever it is.
"""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from empath.core import errors, events, logs, names, queue, store

log = logging.getLogger("empath.core.bodies")


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
