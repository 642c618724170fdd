"""A consumer reads the current version of an event and the older ones still in a stream."""

from __future__ import annotations

import json

import pytest

from empath.core import errors, events

V1_JOB = {
    "kind": "delivery-job",
    "version": 1,
    "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "attempt": 2,
    "body_key": "bodies/2026/01/01/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "size": 120,
    "sender": "a@example.org",
    "recipients": [{"address": "u@example.com", "notify": ["FAILURE"], "orcpt": "rfc822;u"}],
    "ret": "HDRS",
    "envid": "QQ314159",
    "smtputf8": True,
    "body": "8BITMIME",
}


def test_a_version_1_job_still_in_the_stream_is_read_as_the_current_version() -> None:
    job = events.decode(json.dumps(V1_JOB).encode(), events.DeliveryJob)
    assert job == events.DeliveryJob(
        id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        attempt=2,
        body_key="bodies/2026/01/01/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        size=120,
        envelope=events.Envelope(
            sender="a@example.org",
            recipients=(
                events.Recipient(address="u@example.com", notify=("FAILURE",), orcpt="rfc822;u"),
            ),
            ret="HDRS",
            envid="QQ314159",
            smtputf8=True,
            body="8BITMIME",
        ),
    )


def test_the_current_version_reads_back_what_was_published() -> None:
    job = events.decode(json.dumps(V1_JOB).encode(), events.DeliveryJob)
    assert events.decode(job.model_dump_json().encode(), events.DeliveryJob) == job


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "undecodable delivery-job"),
        (b"[]", "expected a delivery-job event"),
        (json.dumps({**V1_JOB, "kind": "received"}).encode(), "expected a delivery-job event"),
        (json.dumps({**V1_JOB, "version": 0}).encode(), r"version 0: this reads \[1, 2, 3, 4\]"),
        (
            json.dumps({**V1_JOB, "version": "4"}).encode(),
            r"version '4': this reads \[1, 2, 3, 4\]",
        ),
        (json.dumps({**V1_JOB, "version": True}).encode(), r"version True: this reads"),
        (json.dumps({**V1_JOB, "recipients": []}).encode(), "undecodable delivery-job v1"),
    ],
)
def test_an_event_that_cannot_be_read_is_refused_for_good(data: bytes, message: str) -> None:
    with pytest.raises(errors.BadEvent, match=message) as refused:
        events.decode(data, events.DeliveryJob)
    assert isinstance(refused.value, errors.PermanentError)


@pytest.mark.parametrize("version", [5, 99])
def test_an_event_of_a_newer_version_waits_for_this_service_to_be_upgraded(version: int) -> None:
    """A newer peer is rolling out: the event is put back (nak), not terminated."""
    with pytest.raises(errors.NewerEvent, match=f"version {version}: this reads") as waiting:
        events.decode(json.dumps({**V1_JOB, "version": version}).encode(), events.DeliveryJob)
    assert waiting.value.temporary
    assert not isinstance(waiting.value, errors.PermanentError)
