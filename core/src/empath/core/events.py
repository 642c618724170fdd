"""Versioned events that cross the bus, and the JSON schemas exported from them.

An event's `kind` and `version` travel with it; a consumer never guesses at a version it does
not know. A newer one waits (`NewerEvent`, temporary: the peer that wrote it is rolling out,
and this service reads it once upgraded too); an older one it no longer reads is refused for
good (`BadEvent`). So when an event's version changes, its consumers are upgraded before its
producers (delivery before spool for `DeliveryJob`). Adding an optional field keeps the
version; anything else is a new one.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from empath.core import errors

Notify = Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"]


def _from_base64(value: object) -> object:
    """Bytes as given; text (the JSON form) as base64, strictly."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise ValueError(f"not base64: {error}") from error
    return value


# A message body carried in an event: bytes in Python, base64 text in JSON.
InlineBody = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda value: base64.b64encode(value).decode("ascii"), when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class Model(BaseModel):
    """Base of every event and queue record: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipient(Model):
    """One envelope recipient with its DSN parameters (RFC 3461)."""

    address: str
    notify: tuple[Notify, ...] | None = None
    orcpt: str | None = None


class Client(Model):
    """Who handed the message to ingress: for the trace header, policy and audits."""

    ip: str
    helo: str | None = None
    tls: bool = False
    authenticated_as: str | None = None
    listener: str = "smtp"


class Envelope(Model):
    """The SMTP envelope of an accepted message."""

    sender: str = Field(description="Reverse-path; empty for the null sender <>.")
    recipients: tuple[Recipient, ...] = Field(min_length=1)
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: Literal["7BIT", "8BITMIME"] = "7BIT"


class Received(Model):
    """ingress -> spool: a message was accepted; its body is in the bucket under `body_key`, or
    (a small message) in this event only.

    Version 4 says whether the bucket holds the body (`stored`). A small message (`body`, up
    to `EMPATH_INLINE_BODY_LIMIT`) is not stored by ingress: this event, kept by JetStream as
    durably as the queue state, is its copy until the spool stores it, which it does only when
    the message has to wait (a deferral, a frozen queue, a message not due yet). A message
    delivered at its first attempt never touches the bucket. Version 3 added that copy (`body`)
    beside the stored body; version 2 the metadata plugins set in the session
    (`empath.core.plugins`). The spool still reads the older versions (`ReceivedV3`,
    `ReceivedV2`, `ReceivedV1`), so upgrade the spool before ingress.
    """

    kind: Literal["received"] = "received"
    version: Literal[4] = 4
    id: str
    body_key: str
    size: int = Field(ge=0)
    received_at: datetime
    envelope: Envelope
    client: Client
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Set by plugins; kept with the message."
    )
    body: InlineBody | None = Field(
        default=None,
        description="The body (base64), when it is small; None otherwise.",
    )
    stored: bool = Field(
        default=True,
        description="Whether the bucket holds the body under `body_key`; false only when "
        "`body` carries it (this event is then its copy, until the spool stores it).",
    )

    @model_validator(mode="after")
    def _somewhere(self) -> Received:
        if not self.stored and self.body is None:
            raise ValueError("a body that is not stored must be carried (`body`)")
        return self


class DeliveryJob(Model):
    """spool -> delivery: attempt `attempt` of message `id`, for the recipients still to deliver.

    Version 4 may carry the body (`body`), as `received` brought it, for a first attempt
    dispatched on arrival: delivery then does not read it from the bucket. Version 3 added the
    message's metadata (set by plugins), which delivery hands to the event plugins. Version 2
    carried the message's envelope as one `Envelope`, whose recipients are the ones still to
    deliver; version 1 spelled the envelope out field by field. Delivery still reads the older
    ones (`DeliveryJobV3`, `DeliveryJobV2`, `DeliveryJobV1`), for jobs already in the stream
    when it is upgraded.
    """

    kind: Literal["delivery-job"] = "delivery-job"
    version: Literal[4] = 4
    id: str
    attempt: int = Field(ge=1)
    body_key: str
    size: int = Field(ge=0)
    envelope: Envelope = Field(description="The recipients are those still to deliver.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Set by plugins; kept with the message."
    )
    body: InlineBody | None = Field(
        default=None,
        description="The body (base64), when the job carries it; else it is read from the bucket.",
    )


class Older(Model):
    """An older version of an event, still read: it upgrades itself to the current version."""

    def upgrade(self) -> Model:
        raise NotImplementedError


# Versions whose successor only added the optional `body`: the same fields, read as the new one.
class DeliveryJobV3(Older):
    """spool -> delivery: attempt `attempt` of message `id`, for the recipients still to deliver.

    Version 3 adds the message's metadata (set by plugins), which delivery hands to the event
    plugins. Version 2 carried the message's envelope as one `Envelope`, whose recipients are the
    ones still to deliver; version 1 spelled the envelope out field by field. Delivery still
    reads both (`DeliveryJobV2`, `DeliveryJobV1`), for jobs already in the stream when it is
    upgraded.
    """

    model_config = ConfigDict(title="DeliveryJob")

    kind: Literal["delivery-job"] = "delivery-job"
    version: Literal[3] = 3
    id: str
    attempt: int = Field(ge=1)
    body_key: str
    size: int = Field(ge=0)
    envelope: Envelope = Field(description="The recipients are those still to deliver.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Set by plugins; kept with the message."
    )

    def upgrade(self) -> DeliveryJob:
        return DeliveryJob(**_fields(self))


class ReceivedV3(Older):
    """ingress -> spool: a message was accepted; its body is in the bucket under `body_key`.

    Version 3 may also carry the body itself (`body`, when it is small), so its first delivery
    attempt need not read it back from the bucket; the bucket's copy is the one that counts.
    """

    model_config = ConfigDict(title="Received")

    kind: Literal["received"] = "received"
    version: Literal[3] = 3
    id: str
    body_key: str
    size: int = Field(ge=0)
    received_at: datetime
    envelope: Envelope
    client: Client
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Set by plugins; kept with the message."
    )
    body: InlineBody | None = Field(
        default=None,
        description="A copy of the stored body (base64), when it is small; None otherwise.",
    )

    def upgrade(self) -> Received:
        return Received(**_fields(self))


class ReceivedV2(Older):
    """ingress -> spool: a message was accepted; its body is in the bucket under `body_key`.

    Version 2 adds the metadata plugins set in the session (`empath.core.plugins`); the spool
    still reads version 1 (`ReceivedV1`), so upgrade the spool before ingress.
    """

    model_config = ConfigDict(title="Received")

    kind: Literal["received"] = "received"
    version: Literal[2] = 2
    id: str
    body_key: str
    size: int = Field(ge=0)
    received_at: datetime
    envelope: Envelope
    client: Client
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Set by plugins; kept with the message."
    )

    def upgrade(self) -> Received:
        return Received(**_fields(self))


def _fields(event: Older) -> dict[str, object]:
    """An older event's fields but its version, as they are (not dumped): for its successor."""
    return {name: getattr(event, name) for name in type(event).model_fields if name != "version"}


# A delivery job as spools before version 3 published it: read, never written.
class DeliveryJobV2(Older):
    """spool -> delivery: attempt `attempt` of message `id`, for the recipients still to deliver.

    Version 2 carries the message's envelope as one `Envelope`, whose recipients are the ones
    still to deliver. Version 1 spelled the envelope out field by field; delivery still reads it
    (`DeliveryJobV1`), for jobs already in the stream when it is upgraded.
    """

    model_config = ConfigDict(title="DeliveryJob")

    kind: Literal["delivery-job"] = "delivery-job"
    version: Literal[2] = 2
    id: str
    attempt: int = Field(ge=1)
    body_key: str
    size: int = Field(ge=0)
    envelope: Envelope = Field(description="The recipients are those still to deliver.")

    def upgrade(self) -> DeliveryJob:
        return DeliveryJob(
            **self.model_dump(exclude={"version", "envelope"}), envelope=self.envelope
        )


# A delivery job as spools before version 2 published it: read, never written. Its docstring
# and title are those of the schema it was exported with.
class DeliveryJobV1(Older):
    """spool -> delivery: attempt `attempt` of message `id` for these recipients."""

    model_config = ConfigDict(title="DeliveryJob")

    kind: Literal["delivery-job"] = "delivery-job"
    version: Literal[1] = 1
    id: str
    attempt: int = Field(ge=1)
    body_key: str
    size: int = Field(ge=0)
    sender: str
    recipients: tuple[Recipient, ...] = Field(min_length=1, description="Still to deliver.")
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: Literal["7BIT", "8BITMIME"] = "7BIT"

    def upgrade(self) -> DeliveryJob:
        job = self.model_dump(include={"id", "attempt", "body_key", "size"})
        envelope = self.model_dump(include=set(Envelope.model_fields))
        return DeliveryJob(**job, envelope=Envelope(**envelope))


# `received` as ingress published it before plugins: read, never written.
class ReceivedV1(Older):
    """ingress -> spool: a message was accepted; its body is in the bucket under `body_key`."""

    model_config = ConfigDict(title="Received")

    kind: Literal["received"] = "received"
    version: Literal[1] = 1
    id: str
    body_key: str
    size: int = Field(ge=0)
    received_at: datetime
    envelope: Envelope
    client: Client

    def upgrade(self) -> Received:
        return Received(**_fields(self))


Outcome = Literal["delivered", "deferred", "failed"]

# The reply of every recipient of a job whose body is not in the bucket. Delivery gives it and
# the spool recognises it (a message ingress answered 451 for may leave such an outcome), so
# both read it from here.
BODY_MISSING = "554 5.3.0 The message body is missing from the spool"


class RecipientResult(Model):
    """What happened to one recipient in one attempt."""

    address: str
    outcome: Outcome
    reply: str = Field(description="The remote reply (code, enhanced code, text), or ours.")
    remote: str | None = Field(default=None, description="The MX host that answered.")
    tls: str | None = Field(default=None, description="TLS used, or why not.")
    dsn: bool = Field(default=False, description="DSN parameters were passed on to the remote.")


class Attempted(Model):
    """delivery -> spool: the outcome of one attempt, one result per recipient of the job."""

    kind: Literal["attempted"] = "attempted"
    version: Literal[1] = 1
    id: str
    attempt: int = Field(ge=1)
    started_at: datetime
    finished_at: datetime
    worker: str
    results: tuple[RecipientResult, ...] = Field(min_length=1)


EVENTS: tuple[type[Model], ...] = (Received, DeliveryJob, Attempted)

# Older versions still read, by kind and version; each upgrades itself to the current one.
OLDER: dict[tuple[str, int], type[Older]] = {
    ("delivery-job", 1): DeliveryJobV1,
    ("delivery-job", 2): DeliveryJobV2,
    ("delivery-job", 3): DeliveryJobV3,
    ("received", 1): ReceivedV1,
    ("received", 2): ReceivedV2,
    ("received", 3): ReceivedV3,
}

E = TypeVar("E", bound=Model)


def schema_name(event: type[Model]) -> str:
    """File name of an event's schema: `<kind>.v<version>.json`."""
    fields = event.model_fields
    return f"{fields['kind'].default}.v{fields['version'].default}.json"


def export_schemas(directory: Path) -> list[Path]:
    """Write the JSON schema of every event, and of every older version still read."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event in (*EVENTS, *OLDER.values()):
        path = directory / schema_name(event)
        path.write_text(json.dumps(event.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def decode(data: bytes, model: type[E]) -> E:
    """An event of `model`'s kind: its current version, or an older one still read, upgraded.

    A version newer than the current one raises `NewerEvent` (temporary: the consumer puts it
    back for later, when this service will have been upgraded as well). Anything else raises
    `BadEvent`: an event this service cannot read never gets better, so a consumer terminates
    it rather than guessing at it.
    """
    try:
        # Nearly every event is of the current version and valid: one parse, straight into
        # the model. Anything else (an older version, a newer one, a bad event) is looked at
        # closely below, and gets the same answer as ever.
        return model.model_validate_json(data)
    except ValidationError:
        pass
    kind = model.model_fields["kind"].default
    current = model.model_fields["version"].default
    try:
        raw = json.loads(data)
    except ValueError as error:
        raise errors.BadEvent(f"undecodable {kind} event: {error}") from error
    if not isinstance(raw, dict) or raw.get("kind") != kind:
        found = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
        raise errors.BadEvent(f"expected a {kind} event, got {found!r}")
    version = raw.get("version")
    number = version if isinstance(version, int) and not isinstance(version, bool) else None
    try:
        if version == current:
            return model.model_validate(raw)
        older = OLDER.get((kind, number)) if number is not None else None
        if older is None:
            known = sorted([current, *(v for k, v in OLDER if k == kind)])
            if number is not None and number > current:
                raise errors.NewerEvent(
                    f"{kind} event of version {number}: this reads {known}; it waits for "
                    "this service to be upgraded"
                )
            raise errors.BadEvent(f"{kind} event of version {version!r}: this reads {known}")
        return cast(E, older.model_validate(raw).upgrade())
    except ValidationError as error:
        raise errors.BadEvent(f"undecodable {kind} v{version} event: {error}") from error
