"""Versioned events that cross the bus, and the JSON schemas exported from them.

An event's `kind` and `version` travel with it; a consumer refuses a version it does not know
rather than guessing. Adding an optional field keeps the version; anything else is a new one.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Notify = Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"]


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
    """ingress -> spool: a message was accepted; its body is in the bucket under `body_key`."""

    kind: Literal["received"] = "received"
    version: Literal[1] = 1
    id: str
    body_key: str
    size: int = Field(ge=0)
    received_at: datetime
    envelope: Envelope
    client: Client


class DeliveryJob(Model):
    """spool -> delivery: attempt `attempt` of message `id` for these recipients."""

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


Outcome = Literal["delivered", "deferred", "failed"]


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


def schema_name(event: type[Model]) -> str:
    """File name of an event's schema: `<kind>.v<version>.json`."""
    fields = event.model_fields
    return f"{fields['kind'].default}.v{fields['version'].default}.json"


def export_schemas(directory: Path) -> list[Path]:
    """Write the JSON schema of every event, and of the spool's query API, into `directory`."""
    # The queries carry queue records, which are built from these events: importing them at
    # the top would be circular.
    from empath.core import queries

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event in EVENTS:
        path = directory / schema_name(event)
        path.write_text(json.dumps(event.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written + queries.export_schemas(directory)
