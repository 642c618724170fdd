"""Claims and their lease: which records the scheduler dispatches, and which it publishes again."""

from __future__ import annotations

from datetime import timedelta

from empath.core import names, queue
from empath.spool import scheduler
from tests.unit.spool.samples import NOW, entry


def due(**fields: object) -> queue.Entry:
    values: dict[str, object] = {
        "state": queue.State.DEFERRED,
        "next_attempt": NOW - timedelta(seconds=1),
    }
    values.update(fields)
    return entry(**values)  # type: ignore[arg-type]


def test_a_claim_counts_the_attempt_and_leases_the_record_for_a_few_seconds() -> None:
    claimed = scheduler.claimed(due(attempts=2), NOW)

    assert claimed is not None
    assert claimed.state == queue.State.DELIVERING
    assert claimed.attempts == 3
    assert claimed.lease_until == NOW + timedelta(seconds=scheduler.LEASE_SECONDS)
    assert claimed.next_attempt is None  # none while an attempt is out: the API shows none
    assert claimed.updated_at == NOW


def test_what_is_not_due_held_or_already_claimed_is_not_claimed() -> None:
    assert scheduler.claimed(due(next_attempt=NOW + timedelta(seconds=1)), NOW) is None
    assert scheduler.claimed(due(held=True, state=queue.State.FROZEN), NOW) is None
    assert scheduler.claimed(due(state=queue.State.DELIVERING), NOW) is None


def test_a_claim_whose_lease_ran_out_is_published_again_and_a_confirmed_one_is_not() -> None:
    claimed = scheduler.claimed(due(), NOW)
    assert claimed is not None
    later = NOW + timedelta(seconds=scheduler.LEASE_SECONDS)

    assert not scheduler.lease_expired(claimed, NOW)
    assert scheduler.lease_expired(claimed, later)
    assert not scheduler.lease_expired(claimed.model_copy(update={"lease_until": None}), later)
    assert not scheduler.lease_expired(due(), later)  # waiting, not claimed


def test_a_record_claimed_before_leases_existed_is_not_published_again_at_once() -> None:
    # Claims then kept the due time in `next_attempt`, long past by the upgrade.
    old_claim = entry(
        state=queue.State.DELIVERING,
        next_attempt=NOW - timedelta(seconds=30),
        updated_at=NOW - timedelta(seconds=30),
    )

    assert not scheduler.lease_expired(old_claim, NOW)


def test_a_claim_with_no_recipient_left_open_is_not_published_again() -> None:
    claimed = scheduler.claimed(due(), NOW)
    assert claimed is not None
    # An operator deleted the open recipient meanwhile; a delivered one is left.
    emptied = claimed.model_copy(
        update={
            "recipients": (queue.RecipientState(address="done@example.com", status="delivered"),)
        }
    )

    assert not scheduler.lease_expired(emptied, NOW + timedelta(seconds=scheduler.LEASE_SECONDS))


def test_the_job_of_a_claim_carries_its_attempt_and_open_recipients_only() -> None:
    claimed = scheduler.claimed(
        due(
            recipients=(
                queue.RecipientState(address="done@example.com", status="delivered"),
                queue.RecipientState(address="open@example.com", status="deferred"),
            ),
        ),
        NOW,
    )
    assert claimed is not None

    job = scheduler.job_for(claimed)

    assert job.attempt == claimed.attempts
    assert [r.address for r in job.envelope.recipients] == ["open@example.com"]


def test_a_claim_older_than_half_the_duplicate_window_is_left_to_the_delivering_timeout() -> None:
    claimed = scheduler.claimed(due(), NOW)
    assert claimed is not None
    window = timedelta(seconds=names.JOBS_STREAM.duplicate_window_seconds)

    assert scheduler.lease_expired(claimed, NOW + window / 2 - timedelta(seconds=1))
    assert not scheduler.lease_expired(claimed, NOW + window / 2)
