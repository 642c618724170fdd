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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from empath.core import errors

if TYPE_CHECKING:  # settings declares plugins with this module's hook names
    from empath.core.settings import Plugin, Settings

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
    trusted: bool = Field(
        default=False, description="The client's address is in EMPATH_TRUSTED_NETWORKS."
    )
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


# An in-process plugin: an async callable from a request to a verdict (None: continue).
Function = Callable[[Request], Awaitable[Verdict | None]]
Options = TypeVar("Options", bound=BaseModel)
Factory = TypeVar("Factory", bound=Callable[["Setup"], Function])
_FACTORY_MARK = "__empath_plugin_factory__"


@dataclass(frozen=True, slots=True)
class Setup:
    """What a plugin factory is given once, at start: its declaration (with its `options`) and
    the service's settings (hostname, DNS, trusted networks...)."""

    plugin: Plugin
    settings: Settings

    def options(self, model: type[Options]) -> Options:
        """The declaration's `options` read into `model`, or a `ConfigurationError` naming the
        plugin and every wrong option (the service stops at start)."""
        try:
            return model.model_validate(self.plugin.options or {})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(['options', *(str(part) for part in item['loc'])])}: "
                f"{item['msg'].removeprefix('Value error, ')}"
                for item in error.errors()
            )
            raise self.error(problems) from None

    def error(self, problem: str) -> errors.ConfigurationError:
        """A start-time error about this plugin, named as the operator wrote it."""
        return errors.ConfigurationError(f"EMPATH_PLUGINS: plugin {self.plugin.name!r}: {problem}")


def factory(make: Factory) -> Factory:
    """Mark `make` as a plugin factory: the callable a declaration's `module` names is then
    called once at start with a `Setup` (options, settings), and returns the plugin function.
    A factory checks its options there and raises `ConfigurationError` (`Setup.error`) for a
    wrong one. The function it returns may have an async `close()`, called at stop."""
    setattr(make, _FACTORY_MARK, True)
    return make


def is_factory(target: object) -> bool:
    return getattr(target, _FACTORY_MARK, False) is True


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
