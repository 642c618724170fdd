"""What happens after the final dot: the message is made durable, then acknowledged.

The body goes into the bucket (uploaded from where the session kept it, see `bodies`), then
`received` is published and JetStream's ack awaited; only then does the client get
`250 ... queued as <id>`. If either step fails the client gets 451, the body is removed again,
and the session stays usable. The commit is shielded from the session's cancellation (a client
that hangs up after the dot), so it is never half done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from empath.core import bus as bus_module
from empath.core import (
    errors,
    events,
    ids,
    logs,
    metrics,
    names,
    pluginevents,
    plugins,
    store,
    telemetry,
)
from empath.ingress import bodies, replies, syntax
from empath.ingress.protocol import IDENT, Session, Transaction

log = logging.getLogger("empath.ingress.handlers")
tracer = telemetry.tracer("empath.ingress")

HEADERS_ROOM = 4096  # for the NATS headers (message id, trace context) next to the event


def protocol_name(session: Any) -> str:
    """The `with` keyword of the trace header (RFC 3848)."""
    if not session.extended_smtp:
        return "SMTP"
    return (
        "ESMTP" + ("S" if session.ssl is not None else "") + ("A" if session.authenticated else "")
    )


def trace_header(*, server: Session, queue_id: str, recipients: list[str], now: datetime) -> bytes:
    """The `Received:` header prepended to every message (RFC 5321 §4.4)."""
    session = server.state
    # The name was checked at HELO; `printable` is the second line of defence against a CR
    # that would start a header of the client's choosing downstream.
    helo = syntax.printable(session.host_name or "unknown")
    lines = [
        f"Received: from {helo} ([{syntax.printable(server.peer_ip)}])",
        f"\tby {server.hostname} ({IDENT.split()[0]}) with {protocol_name(session)} id {queue_id}",
    ]
    if session.ssl is not None and isinstance(server.transport, asyncio.Transport):
        ssl_object = server.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            lines.append(f"\t(using {ssl_object.version()} with cipher {ssl_object.cipher()[0]})")
    tail = f"; {format_datetime(now)}"
    if len(recipients) == 1:  # naming more would tell each recipient about the others
        lines.append(f"\tfor <{syntax.printable(recipients[0])}>{tail}")
    else:
        lines[-1] += tail
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


class QueueingHandler:
    """aiosmtpd handler: the DATA hook that queues the message."""

    def __init__(
        self,
        *,
        objects: store.ObjectStore,
        bus: bus_module.Bus,
        full_dsn_from_untrusted: bool = False,
        inline_body_limit: int = 0,
        body_in_event: Callable[[], bool] = lambda: False,
        plugin_events: pluginevents.Publisher | None = None,
    ) -> None:
        self.objects = objects
        self.bus = bus
        self.full_dsn_from_untrusted = full_dsn_from_untrusted
        self.inline_body_limit = inline_body_limit
        # Whether a small body may stay out of the bucket (every spool reads it from its
        # event: `empath.core.bodies.SpoolsReady`); else it is stored, and its event a copy.
        self.body_in_event = body_in_event
        self.plugin_events = plugin_events

    def _ret(self, server: Session, session: Any, asked: str | None) -> str | None:
        """RET as the DSNs for this message will honour it.

        Anyone can forge a sender: a full-body DSN of mail from an untrusted, unauthenticated
        client would return content of their choosing to whoever they name (backscatter). Such
        mail gets DSNs with the headers only, unless configured otherwise.
        """
        if (
            self.full_dsn_from_untrusted
            or session.authenticated
            or server.policy.is_trusted(server.peer_ip)
        ):
            return asked
        return "HDRS"

    async def handle_DATA(self, server: Session, session: Any, envelope: Transaction) -> str:
        try:
            event, prefix = self._event(server, session, envelope)
            # Everything that can fail without the store fails here, before the body is put:
            # an event that cannot be published must not leave a body behind.
            encoded = event.model_dump_json().encode()
        except Exception:
            log.exception("cannot make the received event of a message from %s", server.peer_ip)
            return replies.QUEUE_FAILED
        if len(encoded) + HEADERS_ROOM > self.bus.nc.max_payload:
            log.warning(
                "%s: the envelope takes %d bytes, over NATS's payload limit",
                server.peer_ip,
                len(encoded),
            )
            return replies.ENVELOPE_TOO_BIG
        assert envelope.body is not None  # set at the final dot
        try:
            # The body as it is uploaded, readable on its own: the session closes its content
            # when this returns, which a client that hangs up makes happen before the commit
            # (shielded from that) is done.
            body = envelope.body.reader(prefix)
        except OSError as error:
            log.error("%s: cannot read the message's content back: %s", server.peer_ip, error)
            return replies.QUEUE_FAILED
        reply = await asyncio.shield(self._commit(event, encoded, body))
        events_out = self.plugin_events
        # The event is made only for a plugin that wants it (a session's view costs).
        if (
            reply.startswith("250")
            and events_out is not None
            and events_out.wants("message_received")
        ):
            events_out.emit(
                plugins.Event(
                    event="message_received",
                    at=event.received_at,
                    service="ingress",
                    session=server.plugin_session(),
                    id=event.id,
                    sender=event.envelope.sender,
                    recipients=tuple(r.address for r in event.envelope.recipients),
                    metadata=event.metadata,
                )
            )
        return reply

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's last resort for an error in a command: a generic reply, never the
        exception's text (it would tell a client about the inside)."""
        log.error("error in an SMTP command: %s", error, exc_info=error)
        return replies.INTERNAL_ERROR

    def _event(
        self, server: Session, session: Any, envelope: Transaction
    ) -> tuple[events.Received, bytes]:
        """The event, and the headers ingress puts before the content: `Received:`, then the
        ones plugins added."""
        now = datetime.now(UTC)
        # The id the `data` plugins were told, when they were asked.
        queue_id = envelope.queue_id or ids.new_id()
        prefix = (
            trace_header(server=server, queue_id=queue_id, recipients=envelope.rcpt_tos, now=now)
            + envelope.added_headers
        )
        login = getattr(session.auth_data, "login", None)
        content = envelope.body
        size = len(prefix) + (content.size if content is not None else 0)
        # A small message travels in its event, which is then its only copy: it is not stored
        # in the bucket unless it has to wait (`empath.core.bodies`, EMPATH_INLINE_BODY_LIMIT).
        inline = None
        if size <= self.inline_body_limit:
            inline = prefix + (content.head(content.size) if content is not None else b"")
        event = events.Received(
            id=queue_id,
            body_key=store.body_key(queue_id, now),
            size=size,
            received_at=now,
            envelope=events.Envelope(
                sender=envelope.mail_from,
                recipients=tuple(
                    events.Recipient(address=address, notify=params.notify, orcpt=params.orcpt)
                    for address, params in zip(
                        envelope.rcpt_tos, envelope.recipient_parameters, strict=True
                    )
                ),
                ret=self._ret(server, session, envelope.parameters.ret),
                envid=envelope.parameters.envid,
                smtputf8=envelope.parameters.smtputf8,
                body=envelope.parameters.body,
            ),
            client=events.Client(
                ip=server.peer_ip,
                helo=session.host_name,
                tls=session.ssl is not None,
                authenticated_as=syntax.printable(login.decode("utf-8", "replace"))
                if isinstance(login, bytes)
                else None,
                listener=server.listener.name,
            ),
            metadata={**server.session_metadata, **envelope.metadata},
            body=inline,
            stored=inline is None or not self.body_in_event(),
        )
        return event, prefix

    async def _void(self, event: events.Received, mlog: logs.MessageLogger) -> None:
        """Remove the body of a message answered 451. The event may have reached JetStream
        all the same (its acknowledgement lost): a marker tells the spool that this message
        is void when it finds the body gone, so it drops it instead of bouncing it. Without
        the marker the body stays (a duplicate delivery at worst, never a false bounce)."""
        try:
            await self.objects.put(store.void_key(event.body_key), b"")
            await self.objects.delete(event.body_key)
        except errors.EmpathError as cleanup:
            mlog.error("cannot remove the body again: %s", cleanup)

    async def _commit(self, event: events.Received, encoded: bytes, body: bodies.Reader) -> str:
        mlog = logs.for_message(log, event.id)
        with tracer.start_as_current_span(
            "ingress.queue", attributes={"empath.queue_id": event.id}
        ):
            try:
                with body:
                    if event.stored:  # else its event is its copy
                        held = body.held()
                        if held is not None:  # one request, the bytes in hand
                            await self.objects.put(event.body_key, held)
                        else:
                            await self.objects.put_stream(event.body_key, body, body.size)
            except errors.EmpathError as error:
                mlog.error("cannot store the body: %s", error)
                return replies.QUEUE_FAILED
            try:
                await self.bus.publish_encoded(names.RECEIVED_SUBJECT, encoded, msg_id=event.id)
            except Exception as error:  # whatever it was, the body must not stay behind
                mlog.error("cannot publish received: %s", error)
                if event.stored:
                    await self._void(event, mlog)
                return replies.QUEUE_FAILED
        tls = {"tls": "yes" if event.client.tls else "no"}
        metrics.smtp_messages_received.add(1, tls)
        metrics.smtp_message_size.record(event.size, tls)
        mlog.info(
            "queued from=<%s> nrcpt=%d size=%d client=%s",
            event.envelope.sender,
            len(event.envelope.recipients),
            event.size,
            event.client.ip,
        )
        return replies.QUEUED.format(id=event.id)
