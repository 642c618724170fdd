"""The plugin hooks of an SMTP session: what ingress asks validation plugins, and tells event
plugins, at each step of a session (`empath.ingress.plugins` runs the calls).

A mixin of `protocol.Session`, apart so the session's SMTP rules read on their own: the session
calls `_connect_allowed` before its greeting, `_ask` at each command with a hook, and
`_data_plugins` after the final dot. Metadata set at `connect`, `ehlo`, `starttls` or `auth`
belongs to the session (every transaction starts with it); at `mail`, `rcpt` or `data` to the
transaction.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import socket
from asyncio import sslproto
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SMTPSession

from empath.core import ids, pluginevents
from empath.core import plugins as contract
from empath.ingress import plugins as plugin_runtime
from empath.ingress import policies, syntax


class Transaction(Envelope):
    """aiosmtpd's envelope plus the parsed ESMTP/DSN parameters and what plugins set."""

    def __init__(self) -> None:
        super().__init__()
        self.parameters = syntax.MailParameters()
        self.recipient_parameters: list[syntax.RcptParameters] = []
        # Set by plugins: kept with the message, and at DATA the queue id they were told.
        self.metadata: dict[str, str] = {}
        self.queue_id: str | None = None


_REQUESTS: dict[str, type[contract.Request]] = {
    model.model_fields["hook"].default: model for model in contract.REQUESTS
}
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def parameters(tokens: list[str]) -> dict[str, str | None]:
    """MAIL or RCPT parameters as plugins get them: `{"SIZE": "100", "SMTPUTF8": None}`."""
    return {key.upper(): value or None for key, _, value in (t.partition("=") for t in tokens)}


def _header_fields(content: bytes) -> tuple[tuple[str, str], ...]:
    """The header section of a message, as (name, value) pairs for the `data` hook."""
    head = content.split(b"\r\n\r\n", 1)[0]
    parsed = _HEADERS.parsebytes(head + b"\r\n\r\n")
    return tuple((name, str(value)) for name, value in parsed.items())


class PluginHooks:
    """The plugin side of `protocol.Session` (which provides what is declared here)."""

    plugins: plugin_runtime.Runtime | None
    events: pluginevents.Publisher | None
    session_id: str
    session_metadata: dict[str, str]
    _client_name: str | None
    _greeting_pending: bool
    session: SMTPSession | None
    envelope: Envelope | None
    transport: asyncio.BaseTransport | None
    _tls_protocol: sslproto.SSLProtocol | None
    listener: Any
    peer_ip: Any
    policy: policies.RelayPolicy

    async def push(self, status: str | bytes) -> None:
        raise NotImplementedError

    async def _push_raw(self, text: str) -> None:
        raise NotImplementedError

    async def _connect_allowed(self) -> bool:
        """The `connect` hook, before the greeting: a refusal is the only reply, then close."""
        if self.plugins is None or not self.plugins.wants("connect"):
            return True
        self._client_name = await self._reverse_name()
        result = await self._ask("connect")
        if result is None or result.refusal is None:
            return True
        self._greeting_pending = False
        await self._push_raw(result.refusal)
        if self.transport is not None:
            self.transport.close()
        return False

    async def _reverse_name(self) -> str | None:
        """The client's rDNS name, for the `connect` hook (None when it has none soon)."""
        try:
            async with asyncio.timeout(2.0):
                name, _ = await asyncio.get_running_loop().getnameinfo(
                    (self.peer_ip, 0), socket.NI_NAMEREQD
                )
        except (OSError, TimeoutError, ValueError):
            return None
        return str(name)

    def _tls(self) -> tuple[str | None, str | None]:
        if self._tls_protocol is None or self.transport is None:
            return None, None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None, None
        cipher = ssl_object.cipher()
        return ssl_object.version(), cipher[0] if cipher else None

    def plugin_session(self, *, login: str | None = None) -> contract.Session:
        """The session as plugins and plugin events see it."""
        state = self.session
        protocol, cipher = self._tls()
        if login is None and state is not None and state.authenticated:
            raw = getattr(state.auth_data, "login", None)
            login = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None
        return contract.Session(
            id=self.session_id,
            client_ip=self.peer_ip,
            client_name=self._client_name,
            helo=state.host_name if state is not None else None,
            tls_protocol=protocol,
            tls_cipher=cipher,
            authenticated_as=login,
            trusted=self.policy.is_trusted(self.peer_ip),
            listener=self.listener.name,
        )

    async def _ask(
        self, hook: contract.Hook, *, login: str | None = None, **fields: object
    ) -> plugin_runtime.Result | None:
        """Ask the plugins of `hook`; None when none is configured for it."""
        if self.plugins is None or not self.plugins.wants(hook):
            return None
        transaction = self.envelope if isinstance(self.envelope, Transaction) else None
        metadata = {**self.session_metadata, **(transaction.metadata if transaction else {})}
        request = _REQUESTS[hook](
            session=self.plugin_session(login=login), metadata=metadata, **fields
        )
        about = fields.get("id") if hook == "data" else self.session_id
        result = await self.plugins.check(request, about=str(about))
        if result.refusal is None:
            if hook in {"mail", "rcpt", "data"} and transaction is not None:
                transaction.metadata.update(result.metadata)
            else:
                self.session_metadata.update(result.metadata)
        return result

    async def _refused_then_closed(self, result: plugin_runtime.Result | None) -> bool:
        """A refusal at ehlo or starttls ends the session, as in the ancestor."""
        if result is None or result.refusal is None:
            return False
        await self.push(result.refusal)
        if self.transport is not None:
            self.transport.close()
        return True

    def _emit(self, event: contract.EventHook, **fields: object) -> None:
        if self.events is None or not self.events.wants(event):
            return
        self.events.emit(
            contract.Event(
                event=event,
                at=datetime.now(UTC),
                service="ingress",
                session=self.plugin_session(),
                metadata=dict(self.session_metadata),
                **fields,
            )
        )

    async def _data_plugins(self, envelope: Transaction, content: bytes) -> str | None:
        """The `data` hook: a refusal's reply, or None with the headers plugins add prepended
        to the content and the queue id they were told kept for the message."""
        envelope.content = envelope.original_content = content
        if self.plugins is None or not self.plugins.wants("data"):
            return None
        envelope.queue_id = ids.new_id()
        limit = self.plugins.body_limit()
        result = await self._ask(
            "data",
            id=envelope.queue_id,
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            size=len(content),
            headers=_header_fields(content),
            body_base64=base64.b64encode(content[:limit]).decode() if limit else None,
            body_truncated=bool(limit) and len(content) > limit,
        )
        if result is None:
            return None
        if result.refusal is not None:
            return result.refusal
        if result.sender is not None:
            envelope.mail_from = result.sender
        added = b"".join(
            f"{header.name}: {header.value}\r\n".encode("utf-8", "surrogateescape")
            for header in result.headers
        )
        envelope.content = envelope.original_content = added + content
        return None
