"""The queue state of one message, as kept in the NATS KV bucket `names.QUEUE_BUCKET`.

The spool writes these records; every other service only reads them (through the spool's
query API). Each write is a compare-and-set on the KV revision, so any number of spool replicas
can work on the queue at once.

Unlike events, records are read tolerantly: a field this version does not know is ignored, in
the record and in the events it embeds (its client, its attempts' results). During a rolling
upgrade a newer spool may add an optional field to what it writes, and older spools and
control replicas still read the record. An older spool that rewrites such a record drops the
field, so a new field must be optional and its absence safe.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from empath.core import events


class Record(BaseModel):
    """Base of the queue record's own models: immutable, and unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _known_fields(model: type[BaseModel]) -> BeforeValidator:
    """Drop the fields `model` does not know from its stored form, for an event (strict on
    the bus) kept inside a record (read tolerantly)."""

    def known(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k in model.model_fields}
        return value

    return BeforeValidator(known)


StoredClient = Annotated[events.Client, _known_fields(events.Client)]
StoredResult = Annotated[events.RecipientResult, _known_fields(events.RecipientResult)]


class State(StrEnum):
    """Where a message is in its life."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    FROZEN = "frozen"


class RecipientStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


class RecipientState(Record):
    """One recipient and how far its delivery got."""

    address: str
    notify: tuple[events.Notify, ...] | None = None
    orcpt: str | None = None
    status: RecipientStatus = RecipientStatus.PENDING
    last_reply: str | None = None
    remote: str | None = None
    notified: tuple[str, ...] = ()  # DSNs already sent for it: "delay", "success", "failure"

    @property
    def open(self) -> bool:
        """Still to be delivered (pending or deferred)."""
        return self.status in {RecipientStatus.PENDING, RecipientStatus.DEFERRED}


class AttemptRecord(Record):
    """One attempt, as kept in a message's history."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    worker: str
    results: tuple[StoredResult, ...]


class Entry(Record):
    """A message in the queue."""

    version: int = 1
    id: str
    state: State = State.QUEUED
    sender: str
    recipients: tuple[RecipientState, ...] = Field(min_length=1)
    size: int
    body_key: str
    received_at: datetime
    attempts: int = 0
    next_attempt: datetime | None = None
    last_reply: str | None = None
    # The rest of the envelope (`events.Envelope`), kept flat as records have always been.
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: Literal["7BIT", "8BITMIME"] = "7BIT"
    client: StoredClient
    history: tuple[AttemptRecord, ...] = ()
    held: bool = False  # frozen by an operator (hold); released by release
    updated_at: datetime | None = None
    # While `delivering`: until when the claim waits for its job's publish to be confirmed
    # (`spool.scheduler`). Left out of the stored form when there is none, which is almost
    # always, so records read the same as before it existed.
    lease_until: datetime | None = Field(default=None, exclude_if=lambda value: value is None)
    # The W3C trace context of the message's arrival: every delivery attempt, however much
    # later, joins that trace. None in records written before it was kept, and then left out
    # when written back, so such a record reads the same to a spool that does not know it.
    traceparent: str | None = Field(default=None, exclude_if=lambda value: value is None)
    # What plugins set in the session (`empath.core.plugins`), kept with the message and
    # shown by `queue view`. Left out when empty, so records without it read as before.
    metadata: dict[str, str] = Field(default_factory=dict, exclude_if=lambda value: not value)
    # Where the body is while the bucket holds none: the sequence, in the `received` stream, of
    # the event that carries it (a small message, which ingress does not store: the spool
    # stores it only when the message has to wait; `empath.core.bodies`). None (left out of the
    # stored form) when the body is in the bucket under `body_key`. An older spool would drop
    # it when it rewrites the record, so ingress makes such records only while every spool's
    # heartbeat says it knows it (`bodies.SpoolsReady`).
    body_seq: int | None = Field(default=None, exclude_if=lambda value: value is None)

    @property
    def open_recipients(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.open]

    @property
    def has_open(self) -> bool:
        """Some recipient is still to be delivered."""
        return any(r.open for r in self.recipients)

    @property
    def finished(self) -> bool:
        return self.state in {State.DELIVERED, State.FAILED}

    @classmethod
    def from_received(
        cls,
        event: events.Received,
        *,
        traceparent: str | None = None,
        sequence: int | None = None,
    ) -> Entry:
        """The first record of a message just accepted: due now. `sequence`: the event's in
        the `received` stream, which is where the body is when the bucket holds none."""
        envelope = event.envelope
        return cls(
            id=event.id,
            recipients=tuple(RecipientState(**r.model_dump()) for r in envelope.recipients),
            size=event.size,
            body_key=event.body_key,
            received_at=event.received_at,
            next_attempt=event.received_at,
            client=event.client,
            traceparent=traceparent,
            metadata=event.metadata,
            body_seq=None if event.stored else sequence,
            **envelope.model_dump(include=_ENVELOPE_REST),
        )

    def envelope(self) -> events.Envelope:
        """The envelope still to deliver: the message's, with only its open recipients."""
        return events.Envelope(
            recipients=tuple(
                events.Recipient(**r.model_dump(include=_RECIPIENT)) for r in self.open_recipients
            ),
            **self.model_dump(include=_ENVELOPE_REST),
        )

    def has_envelope(self, envelope: events.Envelope) -> bool:
        """`envelope == self.envelope()`, field by field instead of building that envelope
        (which took two thirds of delivery's check of a job against its record)."""
        open_recipients = self.open_recipients
        if len(envelope.recipients) != len(open_recipients):
            return False
        return all(
            getattr(envelope, name) == getattr(self, name) for name in _ENVELOPE_REST
        ) and all(
            getattr(given, name) == getattr(kept, name)
            for given, kept in zip(envelope.recipients, open_recipients, strict=True)
            for name in _RECIPIENT
        )


# The envelope's fields that a record keeps as they are (recipients get a status as well).
_ENVELOPE_REST = set(events.Envelope.model_fields) - {"recipients"}
_RECIPIENT = set(events.Recipient.model_fields)
