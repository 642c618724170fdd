"""Queue records and attempt outcomes to feed the spool's logic, without a queue to keep them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from empath.core import events, queue, settings
from empath.spool import records as spool_records
from empath.spool import view

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MESSAGE_ID = "01KJP5Z4M0ABCDEFGHJKMNPQRS"
# A message as a client sent it: folded header, a line that starts with a dot.
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: the plan,\r\n"
    b"  folded as Alice's program folded it\r\n"
    b"Message-ID: <plan@example.org>\r\n"
    b"\r\n"
    b"Line one.\r\n"
    b".Line two starts with a dot.\r\n"
)


def config(**overrides: Any) -> settings.Settings:
    """Settings as given here, whatever EMPATH_* the machine running the tests has."""
    return settings.load(environment=False, hostname="mx.test", **overrides)


def recipient(address: str, **fields: Any) -> queue.RecipientState:
    return queue.RecipientState(address=address, **fields)


def entry(
    *recipients: str | queue.RecipientState,
    sender: str = "alice@example.org",
    received_at: datetime = NOW - timedelta(minutes=1),
    attempts: int = 1,
    **fields: Any,
) -> queue.Entry:
    """A message dispatched `attempts` times (the scheduler counts an attempt when it sends it)."""
    values: dict[str, Any] = {
        "id": MESSAGE_ID,
        "state": queue.State.DELIVERING,
        "sender": sender,
        "recipients": tuple(
            r if isinstance(r, queue.RecipientState) else recipient(r)
            for r in recipients or ("bob@example.com",)
        ),
        "size": 100,
        "body_key": f"bodies/2026/03/02/{MESSAGE_ID}",
        "received_at": received_at,
        "attempts": attempts,
        "client": events.Client(ip="192.0.2.1", helo="client.example.org"),
    }
    values.update(fields)
    return queue.Entry(**values)


def result(
    address: str, outcome: events.Outcome, reply: str, **fields: Any
) -> events.RecipientResult:
    fields.setdefault("remote", "mx1.example.com")
    return events.RecipientResult(address=address, outcome=outcome, reply=reply, **fields)


def attempted(attempt: int, *results: events.RecipientResult) -> events.Attempted:
    return events.Attempted(
        id=MESSAGE_ID,
        attempt=attempt,
        started_at=NOW - timedelta(seconds=2),
        finished_at=NOW,
        worker="worker-1",
        results=results,
    )


class Objects:
    """The bucket: bodies by key."""

    def __init__(self, **bodies: bytes) -> None:
        self.bodies = dict(bodies)

    async def get(self, key: str, *, limit: int | None = None) -> bytes:
        return self.bodies[key][:limit]

    async def put(self, key: str, data: bytes) -> None:
        self.bodies[key] = data


class Bus:
    """JetStream, as far as publishing goes: what was published, deduplicated by message id."""

    def __init__(self) -> None:
        self.published: dict[str, tuple[str, events.Model]] = {}

    async def publish(self, subject: str, event: events.Model, *, msg_id: str) -> None:
        self.published.setdefault(msg_id, (subject, event))


class Records:
    """The KV bucket of queue records, with compare-and-set reduced to applying the change;
    `broken` is what every read raises, for a bucket that fails."""

    def __init__(self, *entries: queue.Entry, broken: Exception | None = None) -> None:
        self.entries = {e.id: e for e in entries}
        self.broken = broken

    async def create(self, new: queue.Entry) -> bool:
        if new.id in self.entries:
            return False
        self.entries[new.id] = new
        return True

    async def get(self, message_id: str) -> queue.Entry:
        return (await self.read(message_id))[0]

    async def read(self, message_id: str) -> spool_records.Known:
        if self.broken is not None:
            raise self.broken
        return self.entries[message_id], 1

    async def update(
        self,
        message_id: str,
        change: Callable[[queue.Entry], queue.Entry | None],
        *,
        known: spool_records.Known | None = None,
    ) -> spool_records.Written | None:
        before = await self.get(message_id)
        after = change(before)
        if after is None:
            return None
        self.entries[message_id] = after
        return spool_records.Written(before, after, 1)


def View(records: Records) -> view.QueueView:
    """The spool's live view of those records, as it stands now."""
    live = view.QueueView()
    for e in records.entries.values():
        live.apply(e.id, e)
    return live
