"""Queue DSNs: store the report in the bucket and hand it to intake like any received message.

The DSN's queue id derives from the message and the event that caused it, so a redelivered
event produces the same id: JetStream drops the duplicate publish and intake records it once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from empath.core import bodies, bus, errors, events, ids, logs, names, queue, store
from empath.core.settings import Settings
from empath.spool import dsn

log = logging.getLogger("empath.spool.notices")


class Notices:
    def __init__(self, *, settings: Settings, bus: bus.Bus, bodies: bodies.Bodies) -> None:
        self.settings = settings
        self.bus = bus
        self.bodies = bodies

    async def send(
        self,
        *,
        kind: str,
        entry: queue.Entry,
        reports: list[dsn.Report],
        cause: str,
        now: datetime,
    ) -> str | None:
        """Queue a DSN of `kind` about `reports`; None when none may be sent."""
        if not reports:
            return None
        if not entry.sender:  # never a DSN to the null sender
            logs.for_message(log, entry.id).info("no %s DSN: the sender is null", kind)
            return None
        try:
            # Only what the DSN returns is read: a 25 MB message bounced with its headers
            # costs the spool 256 KiB, not 25 MB.
            original: bytes | None = await self.bodies.get(
                entry, limit=dsn.HEAD_LIMIT if dsn.headers_only(entry) else None
            )
        except errors.NotFound:
            # Lost (delivery then fails it with 554 5.3.0): the sender must still hear of it,
            # and an outcome that could never be applied would leave the message stuck.
            logs.for_message(log, entry.id).error(
                "body %s is missing: the %s DSN goes without the original", entry.body_key, kind
            )
            original = None
        notice_id = ids.derived_id(f"{entry.id}/{kind}/{cause}", now)
        body = dsn.build(
            kind=kind,
            entry=entry,
            reports=reports,
            original=original,
            hostname=self.settings.hostname,
            now=now,
            retry_until=entry.received_at + timedelta(seconds=self.settings.max_queue_lifetime),
        )
        key = store.body_key(notice_id, now)
        await self.bodies.objects.put(key, body)
        event = events.Received(
            id=notice_id,
            body_key=key,
            size=len(body),
            received_at=now,
            envelope=events.Envelope(
                sender="",
                recipients=(events.Recipient(address=entry.sender, notify=("NEVER",)),),
                smtputf8=entry.smtputf8,
                body="8BITMIME" if entry.body == "8BITMIME" or entry.smtputf8 else "7BIT",
            ),
            client=events.Client(ip="127.0.0.1", helo=self.settings.hostname, listener="dsn"),
        )
        await self.bus.publish(names.RECEIVED_SUBJECT, event, msg_id=notice_id)
        logs.for_message(log, entry.id).info(
            "%s DSN %s to <%s> for %s",
            kind,
            notice_id,
            entry.sender,
            ", ".join(r.recipient.address for r in reports),
        )
        return notice_id
