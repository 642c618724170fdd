"""A job is sent only if it is the one its queue record was dispatched with."""

from __future__ import annotations

import pytest

from empath.core import queue
from empath.delivery import checks
from empath.spool import scheduler
from tests.unit.spool import samples


def test_the_job_the_spool_dispatched_passes() -> None:
    entry = samples.entry(
        "bob@example.com",
        samples.recipient("carol@example.com", status=queue.RecipientStatus.DELIVERED),
        samples.recipient("dave@example.com", status=queue.RecipientStatus.DEFERRED),
        attempts=2,
    )
    assert checks.mismatch(scheduler.job_for(entry), entry) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body_key": "bodies/2026/03/02/another"}, "another body"),
        ({"attempt": 1}, "attempt 1, the message is out on 2"),
        ({"attempt": 3}, "attempt 3, the message is out on 2"),
    ],
)
def test_a_job_naming_another_body_or_attempt_is_refused(
    change: dict[str, object], reason: str
) -> None:
    entry = samples.entry(attempts=2)
    forged = scheduler.job_for(entry).model_copy(update=change)
    assert reason in (checks.mismatch(forged, entry) or "")


def test_a_job_with_a_recipient_or_sender_of_its_own_is_refused() -> None:
    entry = samples.entry(
        "bob@example.com",
        samples.recipient("carol@example.com", status=queue.RecipientStatus.DELIVERED),
    )
    job = scheduler.job_for(entry)
    added = (
        *job.envelope.recipients,
        job.envelope.recipients[0].model_copy(update={"address": "thief@evil.test"}),
    )
    again = (
        *job.envelope.recipients,
        job.envelope.recipients[0].model_copy(update={"address": "carol@example.com"}),
    )
    for envelope in (
        job.envelope.model_copy(update={"recipients": added}),
        job.envelope.model_copy(update={"recipients": again}),  # one already delivered
    ):
        refused = checks.mismatch(job.model_copy(update={"envelope": envelope}), entry)
        assert refused == "the job's recipients are not those its message has still to deliver"
    sender = job.envelope.model_copy(update={"sender": "ceo@example.org"})
    assert checks.mismatch(job.model_copy(update={"envelope": sender}), entry) == (
        "the job's sender is not its message's"
    )
    ret = job.envelope.model_copy(update={"ret": "FULL"})
    notify = job.envelope.model_copy(
        update={
            "recipients": (
                job.envelope.recipients[0].model_copy(update={"notify": ("NEVER",)}),
                *job.envelope.recipients[1:],
            )
        }
    )
    for envelope in (ret, notify):
        assert checks.mismatch(job.model_copy(update={"envelope": envelope}), entry) == (
            "the job's envelope is not its message's"
        )


@pytest.mark.parametrize("state", [s for s in queue.State if s != queue.State.DELIVERING])
def test_a_job_for_a_message_not_out_for_delivery_is_refused(state: queue.State) -> None:
    entry = samples.entry(attempts=1)
    job = scheduler.job_for(entry)
    assert checks.mismatch(job, entry.model_copy(update={"state": state})) == (
        f"the message is {state.value}, not delivering"
    )


def test_a_job_carrying_a_body_of_another_size_than_its_message_is_refused() -> None:
    entry = samples.entry(attempts=2)
    own = b"x" * entry.size
    assert checks.mismatch(scheduler.job_for(entry, own), entry) is None
    for other in (own + b"Bcc: thief@evil.test\r\n", own[:-1], b""):
        assert checks.mismatch(scheduler.job_for(entry, other), entry) == (
            "the job's body is not its message's size"
        )
