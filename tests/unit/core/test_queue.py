"""A queue record keeps the envelope it was given, and hands on what is still to deliver."""

from __future__ import annotations

from datetime import UTC, datetime

from empath.core import events, queue

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


def test_a_recipient_already_delivered_is_left_out_of_the_next_envelope() -> None:
    entry = queue.Entry.from_received(received())
    first, second = entry.recipients
    entry = entry.model_copy(
        update={"recipients": (first.model_copy(update={"status": "delivered"}), second)}
    )
    assert entry.envelope() == ENVELOPE.model_copy(update={"recipients": ENVELOPE.recipients[1:]})


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
