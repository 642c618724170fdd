"""Hostile peers (issue 10): SMTP clients and remote MX hosts that attack, and what they get.

Ingress runs for real (with the spool, and delivery where a remote is involved); the clients
are the raw-socket `Wire` (through `System.wire`), the hostile remote MX hosts small asyncio
servers on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from empath.core import logs
from empath.ingress import handlers, syntax
from tests.mail import settle
from tests.system import StartSystem, System

BODY = b"Subject: hi\r\n\r\nHello.\r\n"


async def queued(system: System, *mail: str, body: bytes = BODY) -> str:
    """One transaction (`mail` is the MAIL line's argument, then each RCPT's); its queue id."""
    wire = await system.wire()
    try:
        assert (await wire.command("EHLO client.test")).startswith("250")
        sender, *recipients = mail
        assert (await wire.command(f"MAIL FROM:{sender}")).startswith("250")
        for recipient in recipients:
            assert (await wire.command(f"RCPT TO:{recipient}")).startswith("250")
        assert (await wire.command("DATA")).startswith("354")
        await wire.send(body + b".\r\n")
        reply = await wire.reply()
    finally:
        await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


# HELO/EHLO header injection


@pytest.mark.parametrize("command", [b"EHLO", b"HELO"])
@pytest.mark.parametrize(
    "name",
    [
        b"evil.test\rX-Injected: yes\rBcc: hidden@other.org",
        b"evil.test\x00X-Injected: yes",
        b"evil.test\x1b[2J",
        b"\xff\xfe.evil.test",
    ],
)
async def test_a_helo_name_that_could_inject_headers_is_refused_with_501(
    system: System, command: bytes, name: bytes
) -> None:
    wire = await system.wire()
    reply = await wire.command(command + b" " + name)
    assert reply == f"501 5.5.4 Syntax: {command.decode()} hostname"
    # Without a greeting accepted, no transaction can start.
    assert (await wire.command("MAIL FROM:<a@example.org>")).startswith("503")
    await wire.close()


async def test_injected_headers_never_reach_the_stored_message(system: System) -> None:
    wire = await system.wire()
    assert (await wire.command(b"EHLO evil.test\rX-Injected: yes\rBcc: hidden@other.org"))[
        :3
    ] == "501"
    assert (await wire.command("EHLO evil.test")).startswith("250")
    assert (await wire.command("MAIL FROM:<a@example.org>")).startswith("250")
    assert (await wire.command("RCPT TO:<b@example.com>")).startswith("250")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(BODY + b".\r\n")
    reply = await wire.reply()
    await wire.close()
    queue_id = reply.rsplit(" ", 1)[1]

    entry = await system.entry(queue_id)
    stored = await system.objects.get(entry.body_key)
    headers = stored.partition(b"\r\n\r\n")[0]
    assert headers.startswith(b"Received: from evil.test ([127.0.0.1])\r\n")
    assert b"X-Injected" not in stored
    assert b"\r" not in headers.replace(b"\r\n", b"")
    assert entry.client.helo == "evil.test"


# Addresses that are not UTF-8; nothing stored before everything is checked


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"MAIL FROM:<\xff\xfe@x.example> SMTPUTF8", "553 5.1.7 Malformed sender address"),
        (b"MAIL FROM:<a\xc3@x.example> SMTPUTF8", "553 5.1.7 Malformed sender address"),
        (b"MAIL FROM:<a\xc2\x85b@x.example> SMTPUTF8", "553 5.1.7 Malformed sender address"),
    ],
)
async def test_a_sender_that_is_not_utf8_is_refused_at_mail(
    system: System, command: bytes, reply: str
) -> None:
    wire = await system.wire()
    assert (await wire.command("EHLO client.test")).startswith("250")
    assert await wire.command(command) == reply
    await wire.close()


async def test_a_recipient_that_is_not_utf8_is_refused_and_nothing_is_stored(
    system: System,
) -> None:
    wire = await system.wire()
    assert (await wire.command("EHLO client.test")).startswith("250")
    assert (await wire.command("MAIL FROM:<a@example.org> SMTPUTF8")).startswith("250")
    refused = await wire.command(b"RCPT TO:<\xff\xfe@example.com>")
    orcpt = await wire.command(b"RCPT TO:<b@example.com> ORCPT=utf-8;\xff@example.com")
    assert refused == "553 5.1.3 Malformed recipient address"
    assert orcpt == "501 5.5.4 Invalid value for parameter ORCPT"
    assert (await wire.command("DATA")).startswith("503")  # no recipient was taken
    await wire.close()

    assert await system.bodies() == []
    assert await system.entries() == []


async def test_a_message_whose_event_cannot_be_made_gets_451_and_leaves_no_body(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("secret internal detail")

    monkeypatch.setattr(handlers.QueueingHandler, "_event", broken)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<b@example.com>")
    await wire.command("DATA")
    await wire.send(BODY + b".\r\n")
    reply = await wire.reply()
    # The session goes on: the client may try again.
    assert (await wire.command("RSET")).startswith("250")
    await wire.close()

    assert reply == "451 4.3.0 Temporary failure queueing the message, try again later"
    assert await system.bodies() == []


async def test_an_error_inside_a_command_never_shows_its_text_to_the_client(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(tokens: list[str]) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(syntax, "mail_parameters", broken)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    reply = await wire.command("MAIL FROM:<a@example.org>")
    await wire.close()

    assert reply == "451 4.3.0 Internal error, try again later"


async def test_an_envelope_over_the_bus_payload_limit_is_refused_before_anything_is_stored(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, max_recipients=3000)
    recipients = [f"{'u' * 200}{i}@example.com" for i in range(2500)]  # about 1.2 MB as JSON
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.send("".join(f"RCPT TO:<{r}> ORCPT=rfc822;{r}\r\n" for r in recipients) + "DATA\r\n")
    answers = [await wire.reply() for _ in recipients]
    assert (await wire.reply()).startswith("354")
    await wire.send(BODY + b".\r\n")
    reply = await wire.reply()
    await wire.close()

    assert set(answers) == {"250 2.1.5 Recipient OK"}
    assert reply == ("552 5.3.4 The envelope is too big to queue: send to fewer recipients at once")
    assert await system.bodies() == []


# An overall DATA deadline


async def test_a_client_trickling_data_is_cut_off_at_the_data_deadline(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, smtp_data_deadline=1.5, smtp_data_timeout=30)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<b@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    started = asyncio.get_running_loop().time()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(100):  # a line every 0.2 s: each within the data timeout
                await wire.send(b"x\r\n")
                await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    try:
        reply = await wire.reply(timeout=10)
        elapsed = asyncio.get_running_loop().time() - started
        assert await wire.closed()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        await wire.close()

    assert reply == "421 4.4.2 mx.test Timeout exceeded, closing connection"
    assert 1.4 < elapsed < 5
    assert await system.bodies() == []


# Backscatter: full-body DSNs only for mail from clients that are known


async def test_mail_from_an_untrusted_client_asks_only_for_headers_in_its_dsns(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, trusted_networks="")
    full = await queued(system, "<a@example.org> RET=FULL", "<b@example.com>")
    unsaid = await queued(system, "<a@example.org>", "<b@example.com>")

    assert (await system.entry(full)).ret == "HDRS"
    assert (await system.entry(unsaid)).ret == "HDRS"


async def test_full_body_dsns_for_untrusted_clients_can_be_allowed(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, trusted_networks="", full_dsn_from_untrusted=True)
    full = await queued(system, "<a@example.org> RET=FULL", "<b@example.com>")
    unsaid = await queued(system, "<a@example.org>", "<b@example.com>")

    assert (await system.entry(full)).ret == "FULL"
    assert (await system.entry(unsaid)).ret is None


async def test_a_trusted_client_keeps_its_ret(system: System) -> None:
    full = await queued(system, "<a@example.org> RET=FULL", "<b@example.com>")

    assert (await system.entry(full)).ret == "FULL"


# Hostile remote MX hosts


Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileMx:
    """A remote MX on loopback that runs `conversation` with every client and counts them."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.sessions = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        try:
            await self.conversation(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Conversation], Awaitable[HostileMx]]]:
    started: list[HostileMx] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(conversation: Conversation) -> HostileMx:
        mx = HostileMx(conversation)

        def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(mx._serve(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        mx.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        started.append(mx)
        return mx

    yield start
    for mx in started:
        assert mx.server is not None
        mx.server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def deliver_to(start_system: StartSystem, mx: HostileMx, **overrides: object) -> System:
    """Ingress, spool and delivery, sending `dest.test` to the hostile MX; one attempt now,
    the next an hour later."""
    return await start_system(
        only=("ingress", "spool", "delivery"),
        mx_overrides=f"dest.test=127.0.0.1:{mx.port}",
        retry_schedule=[0, 3600],
        scheduler_interval=0.2,
        delivery_rate_per_domain=0,
        **overrides,
    )


async def test_a_greeting_over_the_stream_limit_is_a_deferred_attempt_not_a_hot_loop(
    start_system: StartSystem, hostile: Callable[[Conversation], Awaitable[HostileMx]]
) -> None:
    async def huge_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 " + b"x" * 200_000 + b"\r\n")
        await writer.drain()
        await reader.read()

    mx = await hostile(huge_greeting)
    system = await deliver_to(start_system, mx)
    queue_id = await queued(system, "<a@example.org>", "<u@dest.test>")

    entry = await settle(system, queue_id, "deferred", "failed")

    assert entry.state == "deferred"
    assert entry.attempts == 1
    reply = entry.recipients[0].last_reply or ""
    assert reply.startswith("451 4.4.2 "), reply
    assert "dropped the session" in reply
    assert mx.sessions == 1


async def test_a_reply_that_trickles_in_line_by_line_is_cut_off_at_the_command_timeout(
    start_system: StartSystem, hostile: Callable[[Conversation], Awaitable[HostileMx]]
) -> None:
    async def endless_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(1000):  # each line well within the command timeout
            writer.write(b"220-still greeting\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)

    mx = await hostile(endless_greeting)
    system = await deliver_to(start_system, mx, delivery_command_timeout=1.0)
    queue_id = await queued(system, "<a@example.org>", "<u@dest.test>")
    started = asyncio.get_running_loop().time()

    entry = await settle(system, queue_id, "deferred", "failed", timeout=15)

    assert asyncio.get_running_loop().time() - started < 10  # not 100 lines x 1 s
    assert entry.attempts == 1
    assert "TimeoutError" in (entry.recipients[0].last_reply or "")


async def test_a_remote_that_answers_every_command_slowly_is_cut_off_at_the_session_timeout(
    start_system: StartSystem, hostile: Callable[[Conversation], Awaitable[HostileMx]]
) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test ESMTP\r\n")
        while await reader.readline():
            await asyncio.sleep(0.6)  # within the command timeout, every time
            writer.write(b"250 slow.test ok\r\n")
            await writer.drain()

    mx = await hostile(slow)
    system = await deliver_to(
        start_system, mx, delivery_command_timeout=2.0, delivery_session_timeout=1.5
    )
    queue_id = await queued(system, "<a@example.org>", "<u@dest.test>")

    entry = await settle(system, queue_id, "deferred", "failed", timeout=15)

    assert entry.attempts == 1
    reply = entry.recipients[0].last_reply or ""
    assert reply.startswith("451 4.4.2 The session with "), reply
    assert "longer than 1.5 s" in reply


# Logs


def test_a_logged_value_cannot_forge_a_log_line_or_drive_a_terminal() -> None:
    record = logging.makeLogRecord(
        {
            "name": "mail.log",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "unrecognised: %s",
            "args": ("X\r\n2026-01-01 00:00:00,000 INFO    empath: forged\x1b[2J\x85\udcff",),
        }
    )

    line = logs.TextFormatter().format(record)

    assert not any(c in line for c in "\r\n\x1b\x85")
    assert line.endswith(
        r"unrecognised: X\r\n2026-01-01 00:00:00,000 INFO    empath: forged\x1b[2J\x85\udcff"
    )
