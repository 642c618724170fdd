"""An `attempted` event handled twice (its first handling queued the DSN, then could not write
the record) queues one DSN: one queue id, one body in the bucket, whatever the clock says."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg

from empath.core import bodies as bodies_module
from empath.core import errors, events, names, plugins, queue
from empath.spool import notices, outcomes, records, removals
from tests.unit.spool.samples import (
    MESSAGE_ID,
    ORIGINAL,
    Bus,
    Objects,
    attempted,
    config,
    entry,
    result,
)

FAILED = "550 5.1.1 <bob@example.com>: No such user"


class Records:
    """The queue record; the first write fails as NATS going away would (the event is nak'd
    and comes again)."""

    def __init__(self, stored: queue.Entry) -> None:
        self.stored = stored
        self.writes_to_fail = 1

    async def read(self, message_id: str) -> records.Known:
        return self.stored, 1

    async def update(
        self,
        message_id: str,
        change: Callable[[queue.Entry], queue.Entry | None],
        *,
        known: records.Known | None = None,
    ) -> records.Written | None:
        after = change(self.stored)
        if after is None:
            return None
        if self.writes_to_fail:
            self.writes_to_fail -= 1
            raise errors.BusUnavailable("cannot update: no NATS")
        before, self.stored = self.stored, after
        return records.Written(before, after, 2)


class Bucket(Objects):
    async def delete_many(self, keys: list[str]) -> list[str]:
        for key in keys:
            self.bodies.pop(key, None)
        return []


class Clock(datetime):
    """The wall clock, a minute later at every look."""

    ticks = 0

    @classmethod
    def now(cls, tz: Any = None) -> Clock:
        cls.ticks += 1
        return cls(2026, 3, 2, 12, 0, tzinfo=UTC) + timedelta(minutes=cls.ticks)  # type: ignore[return-value]


def msg(event: events.Attempted) -> Msg:
    return Msg(_client=None, subject=names.ATTEMPTED_SUBJECT, data=event.model_dump_json().encode())  # type: ignore[arg-type]


async def test_an_outcome_handled_twice_at_different_times_queues_one_bounce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outcomes, "datetime", Clock, raising=False)
    message = entry("bob@example.com")
    stored, bus, bucket = Records(message), Bus(), Bucket(**{message.body_key: ORIGINAL})
    removal = removals.Removals(bucket)  # type: ignore[arg-type]
    handler = outcomes.Outcomes(
        settings=config(),
        records=stored,  # type: ignore[arg-type]
        bodies=bodies_module.Bodies(objects=bucket, js=None),  # type: ignore[arg-type]
        removals=removal,
        notices=notices.Notices(
            settings=config(),
            bus=bus,  # type: ignore[arg-type]
            bodies=bodies_module.Bodies(objects=bucket, js=None),  # type: ignore[arg-type]
        ),
    )
    event = attempted(1, result("bob@example.com", "failed", FAILED))

    with pytest.raises(errors.BusUnavailable):
        await handler.handle(msg(event))
    await handler.handle(msg(event))

    [(subject, bounce)] = bus.published.values()
    assert subject == names.RECEIVED_SUBJECT
    assert isinstance(bounce, events.Received)
    assert [r.address for r in bounce.envelope.recipients] == ["alice@example.org"]
    dsn_bodies = [key for key in bucket.bodies if MESSAGE_ID not in key]
    assert dsn_bodies == [bounce.body_key]
    assert stored.stored.state == queue.State.FAILED
    assert list(removal.pending) == [message.body_key]  # once the record said so
    await removal.flush()
    assert message.body_key not in bucket.bodies


class Told:
    """The plugin events publisher, keeping what it was told to publish."""

    wanted = frozenset({"delivered", "deferred", "failed"})

    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, str | None]] = []

    def emit(self, event: plugins.Event, *, msg_id: str | None = None) -> None:
        self.emitted.append((event.event, event.recipients[0], msg_id))


async def test_plugin_events_lost_with_a_spool_that_died_go_out_when_the_outcome_comes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record was written, then the spool died before its plugin events went out: the
    outcome, redelivered, finds its attempt recorded and publishes them, under the ids of the
    first time (JetStream keeps one copy where both went out). An outcome of an earlier
    attempt, come again, tells nothing: the record has moved on."""
    monkeypatch.setattr(outcomes, "datetime", Clock, raising=False)
    message = entry("bob@example.com", "carol@example.com")
    stored, bus, bucket = Records(message), Bus(), Bucket(**{message.body_key: ORIGINAL})
    stored.writes_to_fail = 0
    told = Told()
    handler = outcomes.Outcomes(
        settings=config(),
        records=stored,  # type: ignore[arg-type]
        bodies=bodies_module.Bodies(objects=bucket, js=None),  # type: ignore[arg-type]
        removals=removals.Removals(bucket),  # type: ignore[arg-type]
        notices=notices.Notices(
            settings=config(),
            bus=bus,  # type: ignore[arg-type]
            bodies=bodies_module.Bodies(objects=bucket, js=None),  # type: ignore[arg-type]
        ),
        plugin_events=told,  # type: ignore[arg-type]
    )
    event = attempted(
        1,
        result("bob@example.com", "delivered", "250 ok"),
        result("carol@example.com", "failed", FAILED),
    )
    await handler.handle(msg(event))
    first = list(told.emitted)
    assert [(kind, to) for kind, to, _ in first] == [
        ("delivered", "bob@example.com"),
        ("failed", "carol@example.com"),
    ]
    assert len({msg_id for _, _, msg_id in first}) == 2

    told.emitted.clear()
    await handler.handle(msg(event))  # redelivered: the spool died before acking it
    assert told.emitted == first

    told.emitted.clear()
    stored.stored = stored.stored.model_copy(update={"attempts": 2})
    await handler.handle(msg(event))
    assert told.emitted == []
