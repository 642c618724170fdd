"""The outbound SMTP session: connect, EHLO, STARTTLS by policy, then pipelined transactions.

Written on asyncio streams rather than aiosmtplib: aiosmtplib's protocol parses one reply per
`data_received` and drops data that arrives before that reply is picked up, so it cannot read
the replies of a pipelined group (RFC 2920). Here MAIL, every RCPT and DATA go out in one
write when the server offers PIPELINING, and each recipient gets its own result from its own
reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from empath.core import errors, events, metrics, telemetry
from empath.delivery import tls
from empath.delivery.resolver import DeliveryDeferred, Hop

log = logging.getLogger("empath.delivery.client")

MAX_REPLY_LINES = 100
# A remote's reply goes into the queue record, logs and DSNs: no control character survives.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without the code

    def __str__(self) -> str:
        return f"{self.code} {' '.join(t for t in self.lines if t)}".rstrip()


class SessionLost(errors.TemporaryError):
    """The connection broke or timed out (turned into a `DeliveryDeferred` with a reply)."""


def wire_body(body: bytes) -> bytes:
    """The message as DATA sends it: CRLF line endings, dot-stuffed, ending in CRLF.CRLF.

    Bare CR and LF become CRLF, so no downstream server can read a different end of data.
    """
    # Each CRLF, bare CR and bare LF becomes one LF, then each LF a CRLF (bytes.replace runs
    # at memory speed; a regular expression took several times as long).
    normalized = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    stuffed = normalized.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


@dataclass(slots=True)
class Connection:
    """An open, greeted (and maybe TLS-protected) session with one MX host."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hop: Hop
    timeout: float
    tls_note: str = ""
    extensions: dict[str, str] = field(default_factory=dict)
    messages: int = 0
    last_used: float = field(default_factory=time.monotonic)
    broken: bool = False
    # No transaction left open: a new session, or the end of DATA answered (which ends the
    # transaction whatever the reply, RFC 5321 §4.1.1.4). Only a session that is not clean
    # needs an RSET before it carries the next message.
    clean: bool = True

    @property
    def usable(self) -> bool:
        return not self.broken and not self.writer.is_closing()

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    @property
    def size_limit(self) -> int | None:
        value = self.extensions.get("size", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    async def read_reply(self) -> Reply:
        """One reply, all its lines within one command timeout (not one timeout per line).

        Whatever goes wrong (a hang-up, a timeout, a line over the stream limit, text that is
        not a reply) loses the session: it is marked broken, so it never goes back to the pool.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read_lines()
        except SessionLost:
            self.broken = True
            raise
        except (OSError, TimeoutError, ssl.SSLError, ValueError) as error:
            # ValueError: a line over the reader's limit (asyncio's LimitOverrunError).
            self.broken = True
            raise SessionLost(f"{error.__class__.__name__}: {error}") from error

    async def _read_lines(self) -> Reply:
        code, texts = 0, []
        for _ in range(MAX_REPLY_LINES):
            raw = await self.reader.readline()
            if not raw.endswith(b"\n"):
                raise SessionLost("connection closed")
            line = _CONTROLS.sub("?", raw.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 3 or not line[:3].isdigit():
                raise SessionLost(f"not an SMTP reply: {line[:80]!r}")
            code = int(line[:3])
            texts.append(line[4:])
            if line[3:4] != "-":
                return Reply(code, tuple(texts))
        raise SessionLost("reply too long")

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            if not self.writer.transport.get_write_buffer_size():
                # All of it went out at once (nearly always): drain cannot wait, so it needs
                # no timer (two of a transaction's six).
                await self.writer.drain()
                return
            async with asyncio.timeout(self.timeout):  # no task of its own, as wait_for makes
                await self.writer.drain()
        except (OSError, TimeoutError, ssl.SSLError) as error:
            self.broken = True
            raise SessionLost(f"{error.__class__.__name__}: {error}") from error

    async def command(self, line: str) -> Reply:
        await self.send(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    async def ehlo(self, helo: str) -> Reply:
        reply = await self.command(f"EHLO {helo}")
        if reply.code != 250:
            self.extensions = {}
            return await self.command(f"HELO {helo}")
        # The reply's first line names the server; each further line is an extension.
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, value = line.partition(" ")
            self.extensions[keyword.lower()] = value.strip()
        return reply

    async def reset(self) -> bool:
        try:
            self.clean = (await self.command("RSET")).code == 250
        except SessionLost:
            return False
        return self.clean

    async def close(self) -> None:
        try:
            if self.usable:
                await self.command("QUIT")
        except SessionLost:
            pass
        finally:
            self.writer.close()
            metrics.delivery_connections_active.add(-1)


@telemetry.traced("smtp.connect")
async def connect(
    hop: Hop,
    *,
    helo: str,
    policy: str,
    ca_file: Path | None,
    connect_timeout: float,
    command_timeout: float,
) -> Connection:
    """Open a session per the TLS policy, or raise `DeliveryDeferred` (the caller tries the
    next MX host)."""
    where = f"{hop.name}[{hop.address}]:{hop.port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(hop.address, hop.port), connect_timeout
        )
    except (OSError, TimeoutError) as error:
        raise DeliveryDeferred(f"451 4.4.1 Cannot connect to {where}: {error}") from error
    metrics.delivery_connections_active.add(1)
    connection = Connection(reader=reader, writer=writer, hop=hop, timeout=command_timeout)
    try:
        greeting = await connection.read_reply()
        if greeting.code != 220:
            raise DeliveryDeferred(f"{greeting} (greeting of {where})")
        reply = await connection.ehlo(helo)
        if reply.code != 250:
            raise DeliveryDeferred(f"{reply} (HELO to {where})")
        connection.tls_note = await _starttls(connection, helo=helo, policy=policy, ca_file=ca_file)
    except SessionLost as error:
        writer.close()
        metrics.delivery_connections_active.add(-1)
        raise DeliveryDeferred(f"451 4.4.2 {where} dropped the session: {error}") from error
    except BaseException:  # refused, or cancelled (the session deadline): never left open
        writer.close()
        metrics.delivery_connections_active.add(-1)
        raise
    return connection


@telemetry.traced("smtp.starttls")
async def _starttls(connection: Connection, *, helo: str, policy: str, ca_file: Path | None) -> str:
    """STARTTLS as the policy says; returns what was decided and why."""
    hop = connection.hop
    if policy == "none":
        return "none (policy none)"
    if not connection.supports("starttls"):
        if policy == "required":
            raise DeliveryDeferred(
                f"451 4.7.5 {hop.name} does not offer STARTTLS and TLS is required"
            )
        return "none (STARTTLS not offered)"
    reply = await connection.command("STARTTLS")
    if reply.code != 220:
        raise DeliveryDeferred(f"{reply} (STARTTLS at {hop.name})")
    context = tls.context(policy, ca_file)
    assert context is not None
    try:
        await asyncio.wait_for(
            connection.writer.start_tls(context, server_hostname=hop.name), connection.timeout
        )
    except (ssl.SSLError, OSError, TimeoutError) as error:
        connection.broken = True
        raise DeliveryDeferred(
            f"451 4.7.5 TLS with {hop.name} failed ({policy}): {error}"
        ) from error
    reply = await connection.ehlo(helo)
    if reply.code != 250:
        raise DeliveryDeferred(f"{reply} (EHLO after STARTTLS at {hop.name})")
    ssl_object = connection.writer.get_extra_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else "TLS"
    verified = "verified" if policy in {"verify", "required"} else "not verified (opportunistic)"
    return f"{version} {verified}"


@telemetry.traced("smtp.transaction")
async def transact(
    connection: Connection,
    job: events.DeliveryJob,
    recipients: list[events.Recipient],
    body: bytes,
) -> list[events.RecipientResult]:
    """One mail transaction for these recipients; a result for each.

    Raises `DeliveryDeferred` only when the session broke before MAIL was accepted (the caller
    may try the next MX host); once MAIL is accepted, every outcome is a result.
    """
    hop = connection.hop
    envelope = job.envelope

    def result(address: str, reply: Reply | str, *, dsn: bool = False) -> events.RecipientResult:
        code = reply.code if isinstance(reply, Reply) else int(reply[:3])
        outcome: events.Outcome = (
            "delivered" if code < 300 else "deferred" if code < 500 else "failed"
        )
        return events.RecipientResult(
            address=address,
            outcome=outcome,
            reply=str(reply),
            remote=hop.name,
            tls=connection.tls_note,
            dsn=dsn and outcome == "delivered",
        )

    def everyone(reply: Reply | str) -> list[events.RecipientResult]:
        return [result(r.address, reply) for r in recipients]

    data = wire_body(body)
    limit = connection.size_limit
    if limit is not None and len(data) > limit:
        return everyone(f"552 5.3.4 Message is bigger than {hop.name} accepts ({limit})")
    if envelope.smtputf8 and not connection.supports("smtputf8"):
        return everyone(f"553 5.6.7 {hop.name} does not support SMTPUTF8")
    if envelope.body == "8BITMIME" and not connection.supports("8bitmime"):
        return everyone(f"554 5.6.3 {hop.name} does not support 8BITMIME")

    dsn = connection.supports("dsn")
    mail = [f"MAIL FROM:<{envelope.sender}>"]
    if connection.supports("size"):
        mail.append(f"SIZE={len(data)}")
    if envelope.body == "8BITMIME":
        mail.append("BODY=8BITMIME")
    if envelope.smtputf8:
        mail.append("SMTPUTF8")
    if dsn and envelope.ret:
        mail.append(f"RET={envelope.ret}")
    if dsn and envelope.envid:
        mail.append(f"ENVID={envelope.envid}")
    rcpts = []
    for r in recipients:
        rcpt = [f"RCPT TO:<{r.address}>"]
        if dsn and r.notify:
            rcpt.append(f"NOTIFY={','.join(r.notify)}")
        if dsn and r.orcpt:
            rcpt.append(f"ORCPT={r.orcpt}")
        rcpts.append(" ".join(rcpt))
    connection.messages += 1
    connection.last_used = time.monotonic()
    connection.clean = False
    try:
        mail_reply, rcpt_replies, data_reply = await _envelope(connection, " ".join(mail), rcpts)
    except SessionLost as error:
        raise DeliveryDeferred(f"451 4.4.2 {hop.name} dropped the session: {error}") from error
    if mail_reply.code >= 400:
        if mail_reply.code == 421:
            connection.broken = True
            raise DeliveryDeferred(str(mail_reply))
        return everyone(mail_reply)
    accepted = [r for r, reply in zip(recipients, rcpt_replies, strict=True) if reply.code < 300]
    final: Reply | str | None = None
    if data_reply is not None and data_reply.code == 354:
        try:
            await connection.send(data if accepted else b".\r\n")
            final = await connection.read_reply()
            connection.clean = True
        except SessionLost as error:
            final = f"451 4.4.2 {hop.name} dropped the session in DATA: {error}"
    elif accepted:
        final = data_reply or "451 4.4.2 No reply to DATA"
    results = []
    for r, reply in zip(recipients, rcpt_replies, strict=True):
        if reply.code >= 300:
            results.append(result(r.address, reply))
        else:
            assert final is not None
            results.append(result(r.address, final, dsn=dsn))
    return results


async def _envelope(
    connection: Connection, mail: str, rcpts: list[str]
) -> tuple[Reply, list[Reply], Reply | None]:
    """MAIL, RCPT... and DATA: in one write with PIPELINING, else one by one (and no RCPT
    after a refused MAIL, no DATA when every RCPT was refused)."""
    if connection.supports("pipelining"):
        await connection.send("".join(f"{c}\r\n" for c in (mail, *rcpts, "DATA")).encode())
        replies: list[Reply] = []
        try:
            for _ in range(len(rcpts) + 2):
                replies.append(await connection.read_reply())
        except SessionLost:
            # A server that answers 421 closes the connection (RFC 5321 §3.8): the 421 is the
            # reason, and it stands for every command it left unanswered.
            closing = next((reply for reply in replies if reply.code == 421), None)
            if closing is None:
                raise
            replies += [closing] * (len(rcpts) + 2 - len(replies))
        if any(reply.code == 421 for reply in replies):
            connection.broken = True
        return replies[0], replies[1:-1], replies[-1]
    mail_reply = await connection.command(mail)
    if mail_reply.code >= 400:
        return mail_reply, [mail_reply for _ in rcpts], None
    rcpt_replies = [await connection.command(rcpt) for rcpt in rcpts]
    if all(reply.code >= 300 for reply in rcpt_replies):
        return mail_reply, rcpt_replies, None
    return mail_reply, rcpt_replies, await connection.command("DATA")
