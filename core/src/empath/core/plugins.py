"""The plugin contract: what a plugin is asked at each hook, what it may answer, what it is told.

One model per validation hook request, one verdict, and one event for the event hooks, each
versioned like the bus's events and exported as JSON schemas (`empath schemas`): an HTTP or
NATS plugin in any language reads and writes exactly these, and an in-process Python plugin gets
the same models. The fields cover what the ancestor's C modules read and set through its
`em_context_*` functions (the id, the sender and the right to change it, the recipients, the
data, the reply, TLS protocol and cipher, metadata by key, and delivery details for events),
so its modules can be carried over onto this contract.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

VERSION = 1

Hook = Literal["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data"]
EventHook = Literal[
    "connection_opened",
    "connection_closed",
    "message_received",
    "delivery_attempt",
    "delivered",
    "deferred",
    "failed",
]
HOOKS: tuple[Hook, ...] = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
EVENT_HOOKS: tuple[EventHook, ...] = (
    "connection_opened",
    "connection_closed",
    "message_received",
    "delivery_attempt",
    "delivered",
    "deferred",
    "failed",
)

# Metadata keys travel in NATS headers' neighbourhood and in queue views: short, printable.
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]
MetadataValue = Annotated[str, StringConstraints(max_length=1024)]
Metadata = dict[MetadataKey, MetadataValue]


class Model(BaseModel):
    """A plugin's side may add fields in a later version: requests are read tolerantly by
    plugins, but what Empath itself reads (the verdict) is checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Session(Model):
    """The SMTP session a request is about."""

    id: str = Field(description="The session's id, in Empath's logs.")
    client_ip: str
    client_name: str | None = Field(default=None, description="The client's rDNS name, if any.")
    helo: str | None = None
    tls_protocol: str | None = Field(default=None, description="e.g. TLSv1.3; None: no TLS.")
    tls_cipher: str | None = None
    authenticated_as: str | None = None
    listener: str = "smtp"


class Request(Model):
    """What every hook request has: the hook, the session, and the metadata set so far."""

    hook: Hook
    version: Literal[1] = 1
    session: Session
    metadata: Metadata = Field(default_factory=dict)


class ConnectRequest(Request):
    """A client connected; the greeting has not been sent."""

    hook: Literal["connect"] = "connect"


class EhloRequest(Request):
    """EHLO or HELO with the name the client gave."""

    hook: Literal["ehlo"] = "ehlo"
    name: str
    extended: bool = Field(description="EHLO (true) or HELO (false).")


class StarttlsRequest(Request):
    """TLS was just set up (`session.tls_protocol` and `tls_cipher` say how)."""

    hook: Literal["starttls"] = "starttls"


class AuthRequest(Request):
    """The client authenticated as `session.authenticated_as`."""

    hook: Literal["auth"] = "auth"


class MailRequest(Request):
    """MAIL FROM, after Empath's own checks."""

    hook: Literal["mail"] = "mail"
    sender: str = Field(description="Reverse-path; empty for the null sender <>.")
    parameters: dict[str, str | None] = Field(default_factory=dict)


class RcptRequest(Request):
    """RCPT TO, after relay policy: the verdict applies to this recipient alone."""

    hook: Literal["rcpt"] = "rcpt"
    sender: str
    recipient: str
    parameters: dict[str, str | None] = Field(default_factory=dict)
    accepted: tuple[str, ...] = Field(default=(), description="Recipients accepted before it.")


class DataRequest(Request):
    """The whole message was received; the verdict decides whether it is queued."""

    hook: Literal["data"] = "data"
    id: str = Field(description="The queue id the message gets if accepted.")
    sender: str
    recipients: tuple[str, ...]
    size: int
    headers: tuple[tuple[str, str], ...] = Field(description="The header fields, in order.")
    body_base64: str | None = Field(
        default=None,
        description="The message (headers and body) as received, when the plugin asks for it "
        "(`body_limit`), cut to that many bytes.",
    )
    body_truncated: bool = False

    def body(self) -> bytes | None:
        return None if self.body_base64 is None else base64.b64decode(self.body_base64)


AnyRequest = Annotated[
    ConnectRequest
    | EhloRequest
    | StarttlsRequest
    | AuthRequest
    | MailRequest
    | RcptRequest
    | DataRequest,
    Field(discriminator="hook"),
]
REQUESTS: tuple[type[Request], ...] = (
    ConnectRequest,
    EhloRequest,
    StarttlsRequest,
    AuthRequest,
    MailRequest,
    RcptRequest,
    DataRequest,
)
request_adapter: TypeAdapter[AnyRequest] = TypeAdapter(AnyRequest)


class Reply(Model):
    """The SMTP reply a refusing plugin gives: 4xx is temporary, 5xx permanent."""

    code: int = Field(ge=400, le=599)
    enhanced: str | None = Field(default=None, pattern=r"^[45]\.\d{1,3}\.\d{1,3}$")
    text: str = Field(default="Refused by policy", max_length=400, pattern=r"^[^\r\n]*$")

    def line(self) -> str:
        enhanced = self.enhanced or f"{self.code // 100}.7.1"
        if enhanced[0] != str(self.code // 100):  # 4xx with 5.x.x would confuse clients
            enhanced = f"{self.code // 100}{enhanced[1:]}"
        return f"{self.code} {enhanced} {self.text}"


class Header(Model):
    """A header field to prepend at `data` (a signature, `Authentication-Results`)."""

    name: str = Field(pattern=r"^[!-9;-~]{1,76}$")
    value: str = Field(max_length=8192, pattern=r"^[^\r\n]*(\r\n[ \t][^\r\n]*)*$")


class Verdict(Model):
    """A plugin's answer at a validation hook."""

    version: Literal[1] = 1
    action: Literal["continue", "refuse"] = "continue"
    reply: Reply | None = Field(default=None, description="Required to refuse.")
    headers: tuple[Header, ...] = Field(default=(), description="Prepended; at `data` only.")
    metadata: Metadata = Field(default_factory=dict, description="Kept with the message.")
    sender: str | None = Field(
        default=None, description="Replace the envelope sender (mail, rcpt, data); '' is <>."
    )

    @property
    def refused(self) -> bool:
        return self.action == "refuse"

    @model_validator(mode="after")
    def _refusal_has_a_reply(self) -> Verdict:
        if self.refused and self.reply is None:
            raise ValueError("a refusing verdict needs a reply")
        return self


CONTINUE = Verdict()


def refuse(code: int, text: str, *, enhanced: str | None = None) -> Verdict:
    """A refusing verdict, for in-process plugins."""
    return Verdict(action="refuse", reply=Reply(code=code, enhanced=enhanced, text=text))


class Delivery(Model):
    """What an event about a delivery attempt adds (the ancestor's `em_delivery_*`)."""

    domain: str
    server: str | None = None
    reply: str | None = None
    attempt: int
    recipient: str | None = None


class Event(Model):
    """An event hook's event, on the plugin events stream (`names.PLUGIN_EVENTS_STREAM`)."""

    kind: Literal["plugin-event"] = "plugin-event"
    version: Literal[1] = 1
    event: EventHook
    at: datetime
    service: str
    session: Session | None = None
    id: str | None = Field(default=None, description="The queue id, once there is one.")
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    metadata: Metadata = Field(default_factory=dict)
    delivery: Delivery | None = None


def export_schemas(directory: Path) -> list[Path]:
    """`plugin.<hook>.request.v1.json`, `plugin.verdict.v1.json`, `plugin.event.v1.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    models: dict[str, type[BaseModel]] = {
        f"plugin.{model.model_fields['hook'].default}.request.v{VERSION}.json": model
        for model in REQUESTS
    }
    models[f"plugin.verdict.v{VERSION}.json"] = Verdict
    models[f"plugin.event.v{VERSION}.json"] = Event
    written = []
    for name, model in models.items():
        path = directory / name
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
