"""The outbound SMTP session: connect, EHLO, STARTTLS by policy, then pipelined transactions.

aiosmtplib provides the connection, EHLO parsing and STARTTLS; the transaction is written here
because aiosmtplib sends one command at a time: with PIPELINING (RFC 2920) MAIL, every RCPT
and DATA go out in one write and their replies are read in order. Every recipient gets its own
result from its own reply.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

from empath.core import events
from empath.delivery import tls
from empath.delivery.resolver import DeliveryError, Hop

log = logging.getLogger("empath.delivery.client")

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def reply_text(response: aiosmtplib.SMTPResponse) -> str:
    return f"{response.code} {' '.join(response.message.split())}"


def wire_body(body: bytes) -> bytes:
    """The message as DATA sends it: CRLF line endings, dot-stuffed, ending in CRLF.CRLF.

    Bare CR and LF become CRLF, so no downstream server can read a different end of data.
    """
    normalized = _LINE_ENDINGS.sub(b"\r\n", body)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return _LEADING_DOT.sub(b"..", normalized) + b".\r\n"


@dataclass(slots=True)
class Connection:
    """An open, greeted (and maybe TLS-protected) session with one MX host."""

    smtp: aiosmtplib.SMTP
    hop: Hop
    tls_note: str
    messages: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected

    def supports(self, extension: str) -> bool:
        return self.smtp.supports_extension(extension)

    @property
    def size_limit(self) -> int | None:
        value = self.smtp.esmtp_extensions.get("size", "")
        return int(value) if value.strip().isdigit() and int(value) > 0 else None

    async def reset(self) -> bool:
        try:
            response = await self.smtp.rset()
        except aiosmtplib.SMTPException:
            return False
        return response.code == 250

    async def close(self) -> None:
        try:
            if self.smtp.is_connected:
                await self.smtp.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self.smtp.close()


async def connect(
    hop: Hop,
    *,
    helo: str,
    policy: str,
    ca_file: Path | None,
    connect_timeout: float,
    command_timeout: float,
) -> Connection:
    """Open a session per the TLS policy, or raise a temporary `DeliveryError` (try the next
    MX host)."""
    smtp = aiosmtplib.SMTP(
        hostname=hop.address,
        port=hop.port,
        local_hostname=helo,
        timeout=command_timeout,
        start_tls=False,
        use_tls=False,
    )
    where = f"{hop.name}[{hop.address}]:{hop.port}"
    try:
        await smtp.connect(timeout=connect_timeout)
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            await smtp.helo()
        note = await _starttls(smtp, hop, policy=policy, ca_file=ca_file)
    except DeliveryError:
        smtp.close()
        raise
    except aiosmtplib.SMTPResponseException as error:
        smtp.close()
        raise DeliveryError(
            f"{error.code} {' '.join(error.message.split())} (from {where})", temporary=True
        ) from error
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
        smtp.close()
        raise DeliveryError(f"451 4.4.1 Cannot talk to {where}: {error}", temporary=True) from error
    return Connection(smtp=smtp, hop=hop, tls_note=note)


async def _starttls(smtp: aiosmtplib.SMTP, hop: Hop, *, policy: str, ca_file: object) -> str:
    """STARTTLS as the policy says; returns what was decided and why."""
    if policy == "none":
        return "none (policy none)"
    if not smtp.supports_extension("starttls"):
        if policy == "required":
            raise DeliveryError(
                f"451 4.7.5 {hop.name} does not offer STARTTLS and TLS is required",
                temporary=True,
            )
        return "none (STARTTLS not offered)"
    context = tls.context(policy, ca_file)
    try:
        await smtp.starttls(tls_context=context, server_hostname=hop.name)
    except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as error:
        raise DeliveryError(
            f"451 4.7.5 TLS with {hop.name} failed ({policy}): {error}", temporary=True
        ) from error
    await smtp.ehlo()
    ssl_object = smtp.get_transport_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else "TLS"
    verified = "verified" if policy in {"verify", "required"} else "not verified (opportunistic)"
    return f"{version} {verified}"


async def transact(
    connection: Connection,
    job: events.DeliveryJob,
    recipients: list[events.JobRecipient],
    body: bytes,
) -> list[events.RecipientResult]:
    """One mail transaction for these recipients; a result for each.

    Raises `DeliveryError` only when the session broke before MAIL was accepted (the caller
    may try the next MX host); once MAIL is accepted, every outcome is a result.
    """
    smtp = connection.smtp
    hop = connection.hop

    def results(
        outcome: events.Outcome, reply: str, *, dsn: bool = False
    ) -> list[events.RecipientResult]:
        return [
            events.RecipientResult(
                address=r.address,
                outcome=outcome,
                reply=reply,
                remote=hop.name,
                tls=connection.tls_note,
                dsn=dsn,
            )
            for r in recipients
        ]

    data = wire_body(body)
    limit = connection.size_limit
    if limit is not None and len(data) > limit:
        return results("failed", f"552 5.3.4 Message is bigger than {hop.name} accepts ({limit})")
    if job.smtputf8 and not connection.supports("smtputf8"):
        return results("failed", f"553 5.6.7 {hop.name} does not support SMTPUTF8")
    if job.body == "8BITMIME" and not connection.supports("8bitmime"):
        return results("failed", f"554 5.6.3 {hop.name} does not support 8BITMIME")

    dsn = connection.supports("dsn")
    mail = [f"MAIL FROM:<{job.sender}>"]
    if connection.supports("size"):
        mail.append(f"SIZE={len(data)}")
    if job.body == "8BITMIME":
        mail.append("BODY=8BITMIME")
    if job.smtputf8:
        mail.append("SMTPUTF8")
    if dsn:
        if job.ret:
            mail.append(f"RET={job.ret}")
        if job.envid:
            mail.append(f"ENVID={job.envid}")
    commands = [" ".join(mail)]
    for r in recipients:
        rcpt = [f"RCPT TO:<{r.address}>"]
        if dsn and r.notify:
            rcpt.append(f"NOTIFY={','.join(r.notify)}")
        if dsn and r.orcpt:
            rcpt.append(f"ORCPT={r.orcpt}")
        commands.append(" ".join(rcpt))
    commands.append("DATA")
    encoding = "utf-8" if job.smtputf8 else "ascii"
    lines = [(c + "\r\n").encode(encoding) for c in commands]
    protocol = smtp.protocol
    timeout = smtp.timeout
    connection.messages += 1
    connection.last_used = time.monotonic()
    try:
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("not connected")
        pipelining = connection.supports("pipelining")
        if pipelining:
            protocol.write(b"".join(lines))
        replies = []
        for line in lines:
            if not pipelining:
                protocol.write(line)
            replies.append(await protocol.read_response(timeout=timeout))
            if not pipelining and replies[-1].code >= 400 and len(replies) == 1:
                break  # MAIL refused: send no RCPT
    except (aiosmtplib.SMTPException, OSError) as error:
        raise DeliveryError(
            f"451 4.4.2 {hop.name} dropped the session: {error}", temporary=True
        ) from error
    mail_reply = replies[0]
    if mail_reply.code >= 400:
        if mail_reply.code == 421:
            raise DeliveryError(reply_text(mail_reply), temporary=True)
        outcome: events.Outcome = "deferred" if mail_reply.code < 500 else "failed"
        return results(outcome, reply_text(mail_reply))
    rcpt_replies = replies[1 : 1 + len(recipients)]
    refused = {}
    accepted = []
    for r, response in zip(recipients, rcpt_replies, strict=False):
        if response.code in (250, 251, 252):
            accepted.append(r)
        else:
            refused[r.address] = response
    data_reply = replies[1 + len(recipients)] if len(replies) > 1 + len(recipients) else None
    final: aiosmtplib.SMTPResponse | None = None
    try:
        if data_reply is not None and data_reply.code == 354:
            protocol.write(data if accepted else b".\r\n")
            final = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError) as error:
        smtp.close()
        final = aiosmtplib.SMTPResponse(
            451, f"4.4.2 {hop.name} dropped the session in DATA: {error}"
        )
    out = []
    for r in recipients:
        reply = refused.get(r.address) or final or data_reply
        if reply is None:
            reply = aiosmtplib.SMTPResponse(451, "4.4.2 No reply to DATA")
        outcome = (
            "delivered" if reply.code < 300 else ("deferred" if reply.code < 500 else "failed")
        )
        out.append(
            events.RecipientResult(
                address=r.address,
                outcome=outcome,
                reply=reply_text(reply),
                remote=hop.name,
                tls=connection.tls_note,
                dsn=dsn and outcome == "delivered",
            )
        )
    return out
