"""A queue record keeps the envelope it was given, and hands on what is still to deliver."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from empath.core import errors, events, queries, queue
from empath.spool import scheduler

ENVELOPE = events.Envelope(
    sender="a@example.org",
    recipients=(
        events.Recipient(address="u@example.com", notify=("SUCCESS", "FAILURE")),
        events.Recipient(address="v@example.net", orcpt="rfc822;v@example.net"),
    ),
    ret="FULL",
    envid="ENV1",
    smtputf8=False,
    body="8BITMIME",
)


def received() -> events.Received:
    return events.Received(
        id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        body_key="k",
        size=10,
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        envelope=ENVELOPE,
        client=events.Client(ip="192.0.2.1"),
    )


def test_a_new_record_hands_on_the_whole_envelope() -> None:
    assert queue.Entry.from_received(received()).envelope() == ENVELOPE


def test_the_job_of_a_first_attempt_is_the_same_with_the_received_envelope() -> None:
    """On arrival the spool's job takes the envelope `received` brought instead of building it
    from the record: every recipient is open then, so it is the same job, byte for byte."""
    event = received()
    claim = scheduler.claimed(queue.Entry.from_received(event), event.received_at)
    assert claim is not None

    given = scheduler.job_for(claim, b"body", envelope=event.envelope)

    assert given == scheduler.job_for(claim, b"body")
    assert given.model_dump_json() == scheduler.job_for(claim, b"body").model_dump_json()


def test_a_recipient_already_delivered_is_left_out_of_the_next_envelope() -> None:
    entry = queue.Entry.from_received(received())
    first, second = entry.recipients
    entry = entry.model_copy(
        update={"recipients": (first.model_copy(update={"status": "delivered"}), second)}
    )
    assert entry.envelope() == ENVELOPE.model_copy(update={"recipients": ENVELOPE.recipients[1:]})


def test_a_record_has_the_envelope_it_would_build_and_no_other() -> None:
    entry = queue.Entry.from_received(received())
    first, second = entry.recipients
    entry = entry.model_copy(
        update={"recipients": (first.model_copy(update={"status": "delivered"}), second)}
    )
    (left,) = ENVELOPE.recipients[1:]
    assert entry.has_envelope(entry.envelope())
    others = [
        ENVELOPE,  # the delivered recipient again
        entry.envelope().model_copy(update={"ret": "HDRS"}),
        entry.envelope().model_copy(update={"envid": None}),
        entry.envelope().model_copy(update={"body": "7BIT"}),
        entry.envelope().model_copy(
            update={"recipients": (left.model_copy(update={"orcpt": None}),)}
        ),
        entry.envelope().model_copy(
            update={"recipients": (left.model_copy(update={"notify": ("NEVER",)}),)}
        ),
    ]
    for other in others:
        assert other != entry.envelope()
        assert not entry.has_envelope(other), other


def test_a_record_stored_before_this_version_still_loads() -> None:
    stored = (
        b'{"version":1,"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","state":"deferred",'
        b'"sender":"a@example.org","recipients":[{"address":"u@example.com","notify":null,'
        b'"orcpt":null,"status":"deferred","last_reply":"451 4.4.1 later","remote":null,'
        b'"notified":[]}],"size":10,"body_key":"k","received_at":"2026-01-01T00:00:00Z",'
        b'"attempts":1,"next_attempt":"2026-01-01T00:00:30Z","last_reply":"451 4.4.1 later",'
        b'"ret":null,"envid":null,"smtputf8":false,"body":"7BIT","client":{"ip":"192.0.2.1",'
        b'"helo":null,"tls":false,"authenticated_as":null,"listener":"smtp"},"history":[],'
        b'"held":false,"updated_at":null}'
    )
    entry = queue.Entry.model_validate_json(stored)
    assert entry.envelope() == events.Envelope(
        sender="a@example.org", recipients=(events.Recipient(address="u@example.com"),)
    )
    assert entry.model_dump_json().encode() == stored


def newer_record() -> dict[str, object]:
    """A record as a newer spool might write it: a field this version does not know at every
    level, in the record, a recipient, the client and an attempt's result."""
    record = json.loads(queue.Entry.from_received(received()).model_dump_json())
    record["priority"] = 5
    record["recipients"][0]["mailbox_hint"] = "x"
    record["client"]["asn"] = 64496
    record["history"] = [
        {
            "attempt": 1,
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:01Z",
            "worker": "w",
            "results": [
                {
                    "address": "u@example.com",
                    "outcome": "deferred",
                    "reply": "451 4.2.0 later",
                    "latency_ms": 12,
                }
            ],
            "queue_wait_ms": 3,
        }
    ]
    return record


def test_a_record_with_fields_this_version_does_not_know_still_loads() -> None:
    entry = queue.Entry.model_validate_json(json.dumps(newer_record()))

    assert entry.envelope() == ENVELOPE
    assert entry.client == events.Client(ip="192.0.2.1")
    assert entry.history[0].results == (
        events.RecipientResult(
            address="u@example.com", outcome="deferred", reply="451 4.2.0 later"
        ),
    )
    assert "priority" not in entry.model_dump()


def test_control_reads_a_newer_spools_answer_about_such_a_record() -> None:
    answer = queries.parse_answer(queries.GetAnswer, json.dumps({"item": newer_record()}).encode())

    assert isinstance(answer, queries.GetAnswer)
    assert answer.item.id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_an_event_on_the_bus_with_an_unknown_field_is_still_refused() -> None:
    event = json.loads(received().model_dump_json())
    event["client"]["asn"] = 64496
    with pytest.raises(errors.BadEvent, match="asn"):
        events.decode(json.dumps(event).encode(), events.Received)


def test_a_lease_is_stored_only_while_there_is_one() -> None:
    entry = queue.Entry.from_received(received())
    leased = entry.model_copy(update={"lease_until": datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)})

    assert "lease_until" not in json.loads(entry.model_dump_json())
    assert queue.Entry.model_validate_json(leased.model_dump_json()) == leased
