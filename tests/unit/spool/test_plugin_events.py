"""The events the spool tells event plugins when it applies an attempt's outcome, and the
ones delivery tells of the attempt itself."""

from __future__ import annotations

from empath.core import events, pluginevents
from empath.spool import outcomes
from tests.unit.spool.samples import NOW, attempted, config, entry, result


def test_each_recipient_gets_the_event_of_its_state_with_the_messages_metadata() -> None:
    before = entry("a@one.test", "b@one.test", "c@two.test", metadata={"score": "0.5"})
    event = attempted(
        1,
        result("a@one.test", "delivered", "250 2.0.0 ok"),
        result("b@one.test", "failed", "550 5.1.1 no such user"),
        result("c@two.test", "deferred", "451 4.2.0 busy", remote="mx.two.test"),
    )
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None
    found = outcomes.plugin_events(after, event)
    assert [(e.event, e.recipients) for e in found] == [
        ("delivered", ("a@one.test",)),
        ("failed", ("b@one.test",)),
        ("deferred", ("c@two.test",)),
    ]
    assert all(e.metadata == {"score": "0.5"} and e.id == before.id for e in found)
    deferred = found[-1].delivery
    assert deferred is not None
    assert (deferred.domain, deferred.server, deferred.reply, deferred.attempt) == (
        "two.test",
        "mx.two.test",
        "451 4.2.0 busy",
        1,
    )


def test_a_deferral_on_the_last_attempt_is_told_as_failed() -> None:
    before = entry("a@one.test", attempts=3)
    event = attempted(3, result("a@one.test", "deferred", "451 4.2.0 busy"))
    after = outcomes.apply(config(max_attempts=3), before, event, now=NOW)
    assert after is not None
    found = outcomes.plugin_events(after, event)
    assert [e.event for e in found] == ["failed"]
    assert found[-1].delivery is not None
    assert found[-1].delivery.reply == after.recipients[0].last_reply


def test_delivery_tells_one_attempt_per_domain_with_the_jobs_metadata() -> None:
    job = events.DeliveryJob(
        id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        attempt=2,
        body_key="k",
        size=1,
        envelope=events.Envelope(
            sender="a@sender.test",
            recipients=(
                events.Recipient(address="a@one.test"),
                events.Recipient(address="b@two.test"),
            ),
        ),
        metadata={"score": "0.5"},
    )
    found = pluginevents.delivery_attempts(
        job,
        [
            result("a@one.test", "delivered", "250 2.0.0 ok", remote="mx.one.test"),
            result("b@two.test", "deferred", "451 4.4.1 no answer", remote=None),
        ],
        at=NOW,
    )
    assert [(e.event, e.recipients, e.metadata, e.service) for e in found] == [
        ("delivery_attempt", ("a@one.test",), {"score": "0.5"}, "delivery"),
        ("delivery_attempt", ("b@two.test",), {"score": "0.5"}, "delivery"),
    ]
    assert [
        (e.delivery.domain, e.delivery.server, e.delivery.attempt) for e in found if e.delivery
    ] == [
        ("one.test", "mx.one.test", 2),
        ("two.test", None, 2),
    ]
