"""The events the spool tells event plugins when it applies an attempt's outcome."""

from __future__ import annotations

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
        ("delivery_attempt", ("a@one.test", "b@one.test")),
        ("delivery_attempt", ("c@two.test",)),
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
    assert [e.event for e in found] == ["delivery_attempt", "failed"]
    assert found[-1].delivery is not None
    assert found[-1].delivery.reply == after.recipients[0].last_reply
