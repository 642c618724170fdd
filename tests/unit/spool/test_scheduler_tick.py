"""One scheduler tick over a queue kept in memory: what it publishes, and what it leaves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import nats.js.errors
import pytest

from empath.core import bodies, errors, events, names, queue
from empath.spool import scheduler
from tests.unit.spool.samples import NOW, Records, View, config, entry

OTHER_ID = "01KJP5Z4M0ABCDEFGHJKMNPQRT"


class Bus:
    def __init__(self) -> None:
        self.published: dict[str, events.Model] = {}
        self.away = False

    async def publish(self, subject: str, event: events.Model, *, msg_id: str) -> None:
        assert subject == names.JOBS_SUBJECT
        if self.away:
            raise errors.BusUnavailable("NATS is restarting")
        self.published.setdefault(msg_id, event)


@dataclass
class Flag:
    value: bytes


class Flags:
    def __init__(self, *, frozen: bool = False) -> None:
        self.frozen = frozen

    async def get(self, key: str) -> Flag:
        if not self.frozen:
            raise nats.js.errors.KeyNotFoundError
        return Flag(b"1")


class Carried:
    """Bodies whose `received` events carry them: the stream sequence -> (message id, body)."""

    def __init__(self, **found: tuple[str, bytes]) -> None:
        self.found = {int(seq.removeprefix("seq")): kept for seq, kept in found.items()}
        self.stored: dict[str, bytes] = {}

    async def carried(self, entry: queue.Entry) -> bytes:
        message_id, body = self.found[entry.body_seq or 0]
        assert message_id == entry.id
        return body

    async def keep(self, entry: queue.Entry, body: bytes | None = None) -> queue.Entry:
        if entry.body_seq is None:
            return entry
        self.stored[entry.body_key] = body or await self.carried(entry)
        return entry.model_copy(update={"body_seq": None})


def ticker(
    *entries: queue.Entry, frozen: bool = False, carried: Carried | None = None
) -> tuple[scheduler.Scheduler, Records, Bus]:
    records, bus = Records(*entries), Bus()
    tick = scheduler.Scheduler(
        settings=config(),
        records=records,  # type: ignore[arg-type]
        bus=bus,  # type: ignore[arg-type]
        flag_store=Flags(frozen=frozen),  # type: ignore[arg-type]
        live=View(records),  # type: ignore[arg-type]
        bodies=carried or bodies.Bodies(objects=None, js=None),  # type: ignore[arg-type]
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


async def test_a_claimed_message_shows_no_next_attempt_and_keeps_its_lease() -> None:
    waiting = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker(waiting)

    assert await tick.tick(NOW) == 1

    claimed = records.entries[waiting.id]
    assert (claimed.state, claimed.attempts) == (queue.State.DELIVERING, 1)
    assert claimed.next_attempt is None
    # Not cleared by a second write: an outcome within the lease settles the attempt.
    assert claimed.lease_until == NOW + timedelta(seconds=scheduler.LEASE_SECONDS)
    assert list(bus.published) == [f"{waiting.id}.1"]


async def test_an_attempt_with_no_outcome_past_its_lease_is_published_again_once() -> None:
    waiting = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker(waiting)
    assert await tick.tick(NOW) == 1
    tick.view.apply(waiting.id, records.entries[waiting.id])

    later = NOW + timedelta(seconds=scheduler.LEASE_SECONDS + 1)
    assert await tick.tick(later) == 1  # the same job again, under the same message id
    tick.view.apply(waiting.id, records.entries[waiting.id])

    assert records.entries[waiting.id].lease_until is None
    assert await tick.tick(later + timedelta(seconds=1)) == 0  # once per attempt
    assert list(bus.published) == [f"{waiting.id}.1"]


async def test_a_message_due_on_arrival_is_recorded_claimed_and_its_job_carries_the_body() -> None:
    new = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker()

    assert await tick.arrive(new, body=b"Subject: hi\r\n\r\nbody\r\n", now=NOW)

    recorded = records.entries[new.id]
    assert (recorded.state, recorded.attempts, recorded.next_attempt) == (
        queue.State.DELIVERING,
        1,
        None,
    )
    assert recorded.lease_until == NOW + timedelta(seconds=scheduler.LEASE_SECONDS)
    job = bus.published[f"{new.id}.1"]
    assert isinstance(job, events.DeliveryJob)
    assert (job.attempt, job.body, job.body_key) == (
        1,
        b"Subject: hi\r\n\r\nbody\r\n",
        new.body_key,
    )
    # What goes on the wire: the body as base64, read back as the same bytes.
    wire = job.model_dump_json().encode()
    assert events.decode(wire, events.DeliveryJob).body == job.body


async def test_a_message_arriving_while_the_queue_is_frozen_is_only_queued() -> None:
    new = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker(frozen=True)

    assert await tick.arrive(new, body=b"x", now=NOW)

    assert records.entries[new.id] == new
    assert bus.published == {}


async def test_a_repeated_arrival_changes_nothing_and_publishes_nothing() -> None:
    first = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW)
    tick, records, bus = ticker()
    assert await tick.arrive(first, body=None, now=NOW)
    bus.published.clear()
    recorded = records.entries[first.id]

    assert not await tick.arrive(first, body=None, now=NOW + timedelta(seconds=1))

    assert records.entries[first.id] == recorded
    assert bus.published == {}


SMALL = b"Subject: small\r\n\r\nx\r\n"


@pytest.mark.parametrize(
    ("body_seq", "carried_body"),
    [
        (None, None),  # delivery reads it from the bucket
        # A small message is not in the bucket until it has to wait: the job published again
        # carries the body its `received` event holds.
        (7, SMALL),
    ],
)
async def test_an_arrival_whose_job_cannot_be_published_goes_out_when_its_lease_runs_out(
    body_seq: int | None, carried_body: bytes | None
) -> None:
    new = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW, body_seq=body_seq)
    carried = Carried(seq7=(new.id, SMALL))
    tick, records, bus = ticker(carried=carried)
    bus.away = True

    assert await tick.arrive(new, body=SMALL, now=NOW)
    assert bus.published == {}
    assert records.entries[new.id].body_seq == body_seq  # claimed on arrival: not stored
    bus.away = False
    tick.view.apply(new.id, records.entries[new.id])

    assert await tick.tick(NOW + timedelta(seconds=scheduler.LEASE_SECONDS + 1)) == 1
    job = bus.published[f"{new.id}.1"]
    assert isinstance(job, events.DeliveryJob)
    assert job.body == carried_body
    assert carried.stored == {}


async def test_a_small_message_arriving_while_the_queue_is_frozen_is_stored_first() -> None:
    new = entry(state=queue.State.QUEUED, attempts=0, next_attempt=NOW, body_seq=7)
    carried = Carried()
    tick, records, bus = ticker(frozen=True, carried=carried)

    assert await tick.arrive(new, body=b"in hand", now=NOW)

    assert carried.stored == {new.body_key: b"in hand"}
    assert records.entries[new.id].body_seq is None
    assert records.entries[new.id].state == queue.State.QUEUED
    assert bus.published == {}


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
