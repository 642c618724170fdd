"""Queueing DSNs: what lands in the bucket and on the bus, with both kept in memory here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from empath.core import bodies, events, ids, names, queue
from empath.spool import dsn, notices, outcomes
from tests.unit.spool.samples import (
    NOW,
    ORIGINAL,
    Bus,
    Objects,
    attempted,
    config,
    entry,
    recipient,
    result,
)

FAILED = "550 5.1.1 No such user"


def notifier(message: queue.Entry, **settings: Any) -> tuple[notices.Notices, Bus, Objects]:
    bus, objects = Bus(), Objects(**{message.body_key: ORIGINAL})
    sender = notices.Notices(
        settings=config(**settings),
        bus=bus,  # type: ignore[arg-type]
        bodies=bodies.Bodies(objects=objects, js=None),  # type: ignore[arg-type]
    )
    return sender, bus, objects


def failure(address: str = "bob@example.com") -> dsn.Report:
    return dsn.Report(recipient(address), "5.1.1", FAILED, "mx1.example.com")


async def test_a_bounce_is_queued_from_the_null_sender_to_the_original_sender() -> None:
    message = entry()
    sender, bus, objects = notifier(message)

    notice_id = await sender.send(
        kind="failure", entry=message, reports=[failure()], cause="attempt-1", now=NOW
    )

    assert notice_id is not None
    assert ids.is_valid(notice_id)
    [(subject, event)] = bus.published.values()
    assert subject == names.RECEIVED_SUBJECT
    assert isinstance(event, events.Received)
    assert event.id == notice_id
    assert event.envelope.sender == ""
    assert event.envelope.recipients == (
        events.Recipient(address="alice@example.org", notify=("NEVER",)),
    )
    body = objects.bodies[event.body_key]
    assert event.size == len(body)
    assert b"Subject: Undelivered Mail Returned to Sender\r\n" in body
    assert b"Final-Recipient: rfc822; bob@example.com\r\n" in body
    assert ORIGINAL in body


async def test_the_null_sender_never_gets_a_dsn() -> None:
    message = entry(sender="")
    sender, bus, objects = notifier(message)

    notice_id = await sender.send(
        kind="failure", entry=message, reports=[failure()], cause="attempt-1", now=NOW
    )

    assert notice_id is None
    assert bus.published == {}
    assert list(objects.bodies) == [message.body_key]


async def test_a_failed_bounce_from_the_null_sender_produces_no_bounce() -> None:
    """End to end through the spool's logic: a DSN that itself fails is not bounced again."""
    message = entry(sender="", attempts=1)
    event = attempted(1, result("bob@example.com", "failed", FAILED))
    after = outcomes.apply(config(), message, event, now=NOW)
    assert after is not None
    assert after.state == queue.State.FAILED
    sender, bus, _ = notifier(message)

    for kind, reports in outcomes.reports_for(
        message, after, event, settings=config(), now=NOW
    ).items():
        await sender.send(kind=kind, entry=message, reports=reports, cause="attempt-1", now=NOW)

    assert bus.published == {}


async def test_a_repeated_cause_queues_the_same_dsn_once() -> None:
    message = entry()
    sender, bus, _ = notifier(message)

    async def send(cause: str) -> str | None:
        return await sender.send(
            kind="failure", entry=message, reports=[failure()], cause=cause, now=NOW
        )

    first, again, other = await send("attempt-1"), await send("attempt-1"), await send("attempt-2")

    assert first == again
    assert other != first
    assert len(bus.published) == 2


async def test_a_delay_notice_tells_until_when_the_queue_retries() -> None:
    message = entry(received_at=NOW - timedelta(hours=5))
    sender, bus, objects = notifier(message, max_queue_lifetime=2 * 24 * 3600)
    report = dsn.Report(recipient("bob@example.com"), "4.2.0", "451 4.2.0 busy", None)

    await sender.send(kind="delay", entry=message, reports=[report], cause="attempt-1", now=NOW)

    [(_, event)] = bus.published.values()
    assert isinstance(event, events.Received)
    body = objects.bodies[event.body_key]
    assert b"Will-Retry-Until: Wed, 04 Mar 2026 07:00:00 +0000\r\n" in body


async def test_a_dsn_about_an_smtputf8_message_is_itself_smtputf8_and_8bit() -> None:
    message = entry(sender="ἀλέξανδρος@παράδειγμα.ελ", smtputf8=True, body="8BITMIME")
    sender, bus, _ = notifier(message)

    await sender.send(
        kind="failure", entry=message, reports=[failure()], cause="attempt-1", now=NOW
    )

    [(_, event)] = bus.published.values()
    assert isinstance(event, events.Received)
    assert event.envelope.smtputf8
    assert event.envelope.body == "8BITMIME"
    assert event.envelope.recipients[0].address == "ἀλέξανδρος@παράδειγμα.ελ"


def test_dsn_ids_are_queue_ids_that_sort_by_time() -> None:
    earlier = ids.derived_id("m/failure/attempt-1", NOW)
    later = ids.derived_id("m/failure/attempt-1", NOW + timedelta(milliseconds=1))

    assert ids.is_valid(earlier)
    assert earlier < later
    assert ids.derived_id("m/failure/attempt-1", NOW) == earlier
    assert ids.derived_id("m/failure/attempt-2", NOW) != earlier
