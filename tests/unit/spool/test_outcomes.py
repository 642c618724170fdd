"""What an attempt's outcome does to the queue record, and which DSNs it calls for."""

from __future__ import annotations

from datetime import timedelta

import pytest

from empath.core import bodies, events, queue
from empath.spool import outcomes
from tests.unit.spool.samples import (
    NOW,
    Records,
    View,
    attempted,
    config,
    entry,
    recipient,
    result,
)

DELIVERED = "250 2.0.0 Ok: queued as 4XyZ"
DEFERRED = "451 4.2.0 Mailbox busy, try later"
FAILED = "550 5.1.1 <carol@example.net>: No such user"


def test_each_recipient_keeps_its_own_outcome_and_the_message_waits_for_the_open_one() -> None:
    before = entry("bob@example.com", "dave@example.com", "carol@example.net", attempts=2)
    event = attempted(
        2,
        result("bob@example.com", "delivered", DELIVERED),
        result("dave@example.com", "deferred", DEFERRED),
        result("carol@example.net", "failed", FAILED, remote="mx.example.net"),
    )

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert [(r.address, r.status, r.last_reply) for r in after.recipients] == [
        ("bob@example.com", "delivered", DELIVERED),
        ("dave@example.com", "deferred", DEFERRED),
        ("carol@example.net", "failed", FAILED),
    ]
    assert after.recipients[2].remote == "mx.example.net"
    assert after.state == queue.State.DEFERRED
    assert after.next_attempt == NOW + timedelta(minutes=2)  # after the second attempt
    assert after.last_reply == DEFERRED  # the first recipient not delivered
    assert [h.attempt for h in after.history] == [2]


def test_a_message_delivered_to_everyone_is_finished_with_no_next_attempt() -> None:
    before = entry("bob@example.com", "dave@example.com")
    event = attempted(
        1,
        result("bob@example.com", "delivered", DELIVERED),
        result("dave@example.com", "delivered", DELIVERED),
    )

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.DELIVERED
    assert after.finished
    assert after.next_attempt is None
    assert after.last_reply is None


def test_a_message_with_no_open_recipient_but_a_failed_one_ends_as_failed() -> None:
    before = entry("bob@example.com", "carol@example.net")
    event = attempted(
        1,
        result("bob@example.com", "delivered", DELIVERED),
        result("carol@example.net", "failed", FAILED),
    )

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.FAILED
    assert after.next_attempt is None
    assert after.last_reply == FAILED


def test_the_same_attempt_reported_twice_is_applied_once() -> None:
    event = attempted(1, result("bob@example.com", "deferred", DEFERRED))
    once = outcomes.apply(config(), entry(), event, now=NOW)
    assert once is not None

    assert outcomes.apply(config(), once, event, now=NOW + timedelta(seconds=5)) is None


def test_a_late_outcome_does_not_reopen_a_finished_message() -> None:
    done = entry(state=queue.State.DELIVERED, attempts=2)
    late = attempted(2, result("bob@example.com", "deferred", DEFERRED))

    assert outcomes.apply(config(), done, late, now=NOW) is None


def test_a_recipient_already_done_or_missing_from_the_results_is_left_as_it_was() -> None:
    before = entry(
        recipient("bob@example.com", status="delivered", last_reply=DELIVERED),
        "dave@example.com",
        attempts=2,
    )
    # A worker reporting bob again (a stale duplicate) and nothing about dave.
    event = attempted(2, result("bob@example.com", "failed", FAILED))

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert after.recipients[0].status == "delivered"
    assert after.recipients[0].last_reply == DELIVERED
    assert after.recipients[1].status == "pending"
    assert after.state == queue.State.DEFERRED


def test_a_deferral_on_the_last_allowed_attempt_fails_the_recipient_for_good() -> None:
    before = entry("bob@example.com", attempts=3)
    event = attempted(3, result("bob@example.com", "deferred", DEFERRED))

    after = outcomes.apply(config(max_attempts=3), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.FAILED
    assert after.next_attempt is None
    assert after.recipients[0].status == "failed"
    assert after.recipients[0].last_reply == f"{DEFERRED} (gave up after 3 attempts)"


def test_a_deferral_before_the_last_allowed_attempt_is_retried() -> None:
    before = entry("bob@example.com", attempts=2)
    event = attempted(2, result("bob@example.com", "deferred", DEFERRED))

    after = outcomes.apply(config(max_attempts=3), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.DEFERRED
    assert after.recipients[0].status == "deferred"


def test_a_deferral_past_the_maximum_queue_lifetime_fails_the_recipient() -> None:
    before = entry("bob@example.com", received_at=NOW - timedelta(hours=2), attempts=2)
    event = attempted(2, result("bob@example.com", "deferred", DEFERRED))

    after = outcomes.apply(config(max_queue_lifetime=3600), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.FAILED
    assert after.recipients[0].last_reply == f"{DEFERRED} (too long in the queue)"


def test_an_expired_message_leaves_delivered_recipients_delivered() -> None:
    before = entry("bob@example.com", "dave@example.com", attempts=25)
    event = attempted(
        25,
        result("bob@example.com", "delivered", DELIVERED),
        result("dave@example.com", "deferred", DEFERRED),
    )

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert [r.status for r in after.recipients] == ["delivered", "failed"]
    assert after.state == queue.State.FAILED


def test_a_held_message_stays_frozen_after_a_deferral() -> None:
    before = entry("bob@example.com", held=True)
    event = attempted(1, result("bob@example.com", "deferred", DEFERRED))

    after = outcomes.apply(config(), before, event, now=NOW)

    assert after is not None
    assert after.state == queue.State.FROZEN


def test_a_failed_recipient_is_due_a_bounce_with_the_remote_status() -> None:
    before = entry("bob@example.com", "carol@example.net")
    event = attempted(
        1,
        result("bob@example.com", "delivered", DELIVERED),
        result("carol@example.net", "failed", FAILED, remote="mx.example.net"),
    )
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    reports = outcomes.reports_for(before, after, event, settings=config(), now=NOW)

    assert list(reports) == ["failure"]  # no success notice: bob asked for none
    [report] = reports["failure"]
    assert report.recipient.address == "carol@example.net"
    assert report.status == "5.1.1"
    assert report.diagnostic == FAILED
    assert report.remote == "mx.example.net"


def test_a_refusal_without_an_enhanced_code_bounces_as_5_0_0() -> None:
    before = entry()
    event = attempted(1, result("bob@example.com", "failed", "550 go away"))
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    [report] = outcomes.reports_for(before, after, event, settings=config(), now=NOW)["failure"]

    assert report.status == "5.0.0"


def test_an_expired_recipient_bounces_as_4_4_7() -> None:
    before = entry(attempts=25)
    event = attempted(25, result("bob@example.com", "deferred", DEFERRED))
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    [report] = outcomes.reports_for(before, after, event, settings=config(), now=NOW)["failure"]

    assert report.status == "4.4.7"
    assert report.diagnostic is not None
    assert report.diagnostic.endswith("(gave up after 25 attempts)")


def test_notify_never_means_no_bounce() -> None:
    before = entry(recipient("bob@example.com", notify=("NEVER",)))
    event = attempted(1, result("bob@example.com", "failed", FAILED))
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    assert outcomes.reports_for(before, after, event, settings=config(), now=NOW) == {}


def test_notify_success_gets_a_notice_unless_the_remote_took_the_dsn_request() -> None:
    before = entry(
        recipient("bob@example.com", notify=("SUCCESS",)),
        recipient("dave@example.com", notify=("SUCCESS", "FAILURE")),
    )
    event = attempted(
        1,
        result("bob@example.com", "delivered", DELIVERED),  # remote without DSN: we report
        result("dave@example.com", "delivered", DELIVERED, dsn=True),  # the remote will
    )
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    reports = outcomes.reports_for(before, after, event, settings=config(), now=NOW)

    assert [r.recipient.address for r in reports["success"]] == ["bob@example.com"]
    assert reports["success"][0].status == "2.0.0"
    assert "failure" not in reports


def test_a_delay_warning_is_due_once_after_the_configured_wait() -> None:
    settings = config(delay_warning_after=3600)
    young = entry(recipient("bob@example.com", notify=("DELAY", "FAILURE")))
    old = entry(
        recipient("bob@example.com", notify=("DELAY", "FAILURE")),
        received_at=NOW - timedelta(hours=2),
    )
    event = attempted(1, result("bob@example.com", "deferred", DEFERRED))

    for before, due in ((young, False), (old, True)):
        after = outcomes.apply(settings, before, event, now=NOW)
        assert after is not None
        reports = outcomes.reports_for(before, after, event, settings=settings, now=NOW)
        assert ("delay" in reports) is due
    [report] = reports["delay"]
    assert report.status == "4.2.0"

    # Once sent, the record remembers it and the next deferral warns no more.
    warned = outcomes.mark_notified(after, {"bob@example.com"}, "delay")
    assert warned.recipients[0].notified == ("delay",)
    next_event = attempted(2, result("bob@example.com", "deferred", DEFERRED))
    # The scheduler dispatches attempt 2 before its outcome can count.
    out_again = warned.model_copy(update={"state": queue.State.DELIVERING, "attempts": 2})
    again = outcomes.apply(settings, out_again, next_event, now=NOW + timedelta(minutes=1))
    assert again is not None
    assert outcomes.reports_for(out_again, again, next_event, settings=settings, now=NOW) == {}


@pytest.mark.parametrize(
    ("state", "attempts", "reported"),
    [
        (queue.State.DEFERRED, 1, 1),  # waiting for its retry: no attempt is out
        (queue.State.QUEUED, 0, 1),  # never dispatched
        (queue.State.FROZEN, 1, 1),  # held
        (queue.State.DELIVERING, 2, 1),  # out on attempt 2: attempt 1's outcome is stale
        (queue.State.DELIVERING, 2, 3),  # an attempt never dispatched
    ],
)
def test_an_outcome_for_an_attempt_that_is_not_out_marks_nothing_delivered(
    state: queue.State, attempts: int, reported: int
) -> None:
    """A forged `attempted` (or one left over) must not make a waiting message vanish."""
    waiting = entry("bob@example.com", state=state, attempts=attempts)
    forged = attempted(reported, result("bob@example.com", "delivered", "250 2.0.0 Ok"))

    assert outcomes.apply(config(), waiting, forged, now=NOW) is None


def test_without_notify_a_deferral_warns_nobody() -> None:
    before = entry(received_at=NOW - timedelta(days=1))
    event = attempted(1, result("bob@example.com", "deferred", DEFERRED))
    after = outcomes.apply(config(), before, event, now=NOW)
    assert after is not None

    assert outcomes.reports_for(before, after, event, settings=config(), now=NOW) == {}


OUT_DELIVERED = attempted(2, result("bob@example.com", "delivered", "250 2.0.0 Ok"))


def reader(*seen: queue.Entry, stored: queue.Entry) -> tuple[outcomes.Outcomes, Records]:
    """Outcomes whose live view shows `seen`, over a bucket holding `stored` (at revision 1)."""
    bucket = Records(stored)
    live = View(Records(*seen))
    return (
        outcomes.Outcomes(
            settings=config(),
            records=bucket,  # type: ignore[arg-type]
            bodies=bodies.Bodies(objects=None, js=None),  # type: ignore[arg-type]
            removals=None,  # type: ignore[arg-type]
            notices=None,  # type: ignore[arg-type]
            live=live,
        ),
        bucket,
    )


async def test_an_outcome_for_the_attempt_the_view_shows_out_is_applied_without_a_read() -> None:
    out = entry(state=queue.State.DELIVERING, attempts=2)
    handler, bucket = reader(out, stored=out)
    bucket.broken = AssertionError("read from the bucket")

    assert await handler._current(OUT_DELIVERED) == (out, 0)


async def test_an_outcome_the_view_does_not_show_out_yet_reads_the_bucket() -> None:
    stored = entry(state=queue.State.DELIVERING, attempts=2)
    for seen in (entry(state=queue.State.DEFERRED, attempts=1), entry(attempts=1)):
        handler, _ = reader(seen, stored=stored)
        assert await handler._current(OUT_DELIVERED) == (stored, 1)
    handler, _ = reader(stored=stored)  # not in the view at all
    assert await handler._current(OUT_DELIVERED) == (stored, 1)


def test_only_a_fresh_first_attempt_that_found_no_body_may_be_a_message_ingress_voided() -> None:
    fresh = entry("bob@example.com", received_at=NOW - timedelta(seconds=30))
    missing = attempted(1, result("bob@example.com", "failed", events.BODY_MISSING))
    assert outcomes.void(fresh, missing, now=NOW)
    # Any other 5.3.0 refusal is the remote's to give, and bounces as usual.
    other = attempted(1, result("bob@example.com", "failed", "554 5.3.0 Remote system error"))
    assert not outcomes.void(fresh, other, now=NOW)
    assert not outcomes.void(fresh.model_copy(update={"attempts": 2}), missing, now=NOW)
    assert not outcomes.void(fresh, missing, now=NOW + outcomes.VOID_WINDOW)
