"""One scheduler tick over a queue kept in memory: what it publishes, and what it leaves."""

from __future__ import annotations

from datetime import timedelta

import nats.js.errors

from empath.core import events, names, queue
from empath.spool import scheduler
from tests.unit.spool.samples import NOW, Records, View, config, entry

OTHER_ID = "01KJP5Z4M0ABCDEFGHJKMNPQRT"


class Bus:
    def __init__(self) -> None:
        self.published: dict[str, events.Model] = {}

    async def publish(self, subject: str, event: events.Model, *, msg_id: str) -> None:
        assert subject == names.JOBS_SUBJECT
        self.published.setdefault(msg_id, event)


class Flags:
    async def get(self, key: str) -> object:
        raise nats.js.errors.KeyNotFoundError


def ticker(*entries: queue.Entry) -> tuple[scheduler.Scheduler, Records, Bus]:
    records, bus = Records(*entries), Bus()
    tick = scheduler.Scheduler(
        settings=config(),
        records=records,  # type: ignore[arg-type]
        bus=bus,  # type: ignore[arg-type]
        flag_store=Flags(),  # type: ignore[arg-type]
        live=View(records),  # type: ignore[arg-type]
    )
    return tick, records, bus


async def test_a_claim_left_with_no_open_recipient_does_not_stop_the_others_going_out() -> None:
    # Claimed a minute ago, its publish never confirmed, and then the operator deleted its
    # only open recipient: nothing to deliver, so no job to publish again.
    emptied = entry(
        queue.RecipientState(address="done@example.com", status="delivered"),
        state=queue.State.DELIVERING,
        lease_until=NOW - timedelta(seconds=1),
        updated_at=NOW - timedelta(seconds=10),
    )
    waiting = entry(
        id=OTHER_ID, state=queue.State.DEFERRED, next_attempt=NOW - timedelta(seconds=1)
    )
    tick, records, bus = ticker(emptied, waiting)

    assert await tick.tick(NOW) == 1

    assert list(bus.published) == [f"{OTHER_ID}.2"]
    assert records.entries[emptied.id] == emptied


async def test_a_claimed_message_shows_no_next_attempt_and_its_confirmed_lease_is_cleared() -> None:
    waiting = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker(waiting)

    assert await tick.tick(NOW) == 1

    claimed = records.entries[waiting.id]
    assert (claimed.state, claimed.attempts) == (queue.State.DELIVERING, 1)
    assert claimed.next_attempt is None
    assert claimed.lease_until is None  # JetStream took the job: nothing to publish again
    assert list(bus.published) == [f"{waiting.id}.1"]


async def test_a_record_claimed_before_leases_is_left_to_the_delivering_timeout() -> None:
    old_claim = entry(
        state=queue.State.DELIVERING,
        next_attempt=NOW - timedelta(seconds=30),
        updated_at=NOW - timedelta(seconds=30),
    )
    tick, records, bus = ticker(old_claim)

    assert await tick.tick(NOW) == 0

    assert bus.published == {}
    assert records.entries[old_claim.id] == old_claim
