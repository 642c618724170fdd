"""Each limit of the SMTP server, with the reply RFC 5321 and RFC 3463 call for."""

from __future__ import annotations

import asyncio

from tests.system import StartSystem
from tests.waiting import eventually
from tests.wire import Wire


async def test_declared_size_over_the_limit_is_rejected_with_552(start_system: StartSystem) -> None:
    system = await start_system(max_message_size=2048)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    reply = await wire.command("MAIL FROM:<a@example.org> SIZE=2049")
    assert reply.startswith("552 5.3.4 ")
    assert await wire.command("MAIL FROM:<a@example.org> SIZE=2048") == "250 2.1.0 Sender OK"
    await wire.close()


async def test_actual_size_over_the_limit_is_rejected_with_552_and_nothing_kept(
    start_system: StartSystem,
) -> None:
    system = await start_system(max_message_size=2048, frozen=True)  # frozen: stored at once
    wire = await system.wire()
    body = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
    reply = await wire.transaction("a@example.org", ["u@example.com"], body * 40)
    assert reply.startswith("552 5.3.4 ")
    # the session goes on, and a message within the limit is taken
    ok = await wire.transaction("a@example.org", ["u@example.com"], body, ehlo=False)
    assert ok.startswith("250 2.0.0 Ok: queued as ")
    await system.entry(ok.rsplit(" ", 1)[1])
    assert len(await system.entries()) == 1
    assert len(await system.bodies()) == 1
    await wire.close()


async def test_too_many_recipients_are_deferred_with_452(start_system: StartSystem) -> None:
    system = await start_system(max_recipients=3)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    for n in range(3):
        assert await wire.command(f"RCPT TO:<u{n}@example.com>") == "250 2.1.5 Recipient OK"
    assert await wire.command("RCPT TO:<u3@example.com>") == "452 4.5.3 Too many recipients"
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
    entry = await system.entry((await wire.reply()).rsplit(" ", 1)[1])
    assert len(entry.recipients) == 3
    await wire.close()


async def test_a_data_line_over_the_limit_is_rejected_with_500(start_system: StartSystem) -> None:
    system = await start_system(max_line_length=100)
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org", ["u@example.com"], b"Subject: long\r\n\r\n" + b"y" * 101 + b"\r\n"
    )
    assert reply.startswith("500 5.5.2 Line too long")
    ok = await wire.transaction(
        "a@example.org",
        ["u@example.com"],
        b"Subject: ok\r\n\r\n" + b"y" * 100 + b"\r\n",
        ehlo=False,
    )
    assert ok.startswith("250 ")
    await wire.close()


async def test_a_very_long_data_line_is_drained_before_the_reply(start_system: StartSystem) -> None:
    system = await start_system(max_line_length=100)
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org", ["u@example.com"], b"Subject: long\r\n\r\n" + b"z" * 200_000 + b"\r\n"
    )
    assert reply.startswith("500 5.5.2 ")
    assert await wire.command("NOOP") == "250 2.0.0 OK"
    await wire.close()


async def test_a_command_line_over_512_octets_is_rejected(start_system: StartSystem) -> None:
    system = await start_system()
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("NOOP " + "x" * 600)).startswith("500 5.5.2 ")
    assert (await wire.command("NOOP " + "x" * 5000)).startswith("500 5.5.2 ")
    assert await wire.command("NOOP") == "250 2.0.0 OK"
    await wire.close()


async def test_connections_over_the_total_are_refused_with_421(start_system: StartSystem) -> None:
    system = await start_system(max_connections=2)
    first, second = await system.wire(), await system.wire()
    third = await Wire.open(system.smtp_port, greet=False)
    assert (await third.reply()).startswith("421 4.7.0 mx.test Too many connections")
    assert await third.closed()
    await first.close()

    async def greeted() -> Wire | None:
        """A new session, once the server has noticed the first one ended."""
        wire = await system.wire()
        if wire.greeting.startswith("220 "):
            return wire
        assert wire.greeting.startswith("421 4.7.0 "), wire.greeting
        await wire.close()
        return None

    fourth = await eventually(greeted, what="a session in the slot the first one left")
    assert fourth is not None
    for wire in (second, third, fourth):
        await wire.close()


async def test_connections_over_the_per_ip_limit_are_refused_with_421(
    start_system: StartSystem,
) -> None:
    system = await start_system(max_connections_per_ip=1)
    first = await system.wire()
    second = await Wire.open(system.smtp_port, greet=False)
    assert (await second.reply()).startswith("421 4.7.0 mx.test Too many connections from")
    assert await second.closed()
    await first.close()
    await second.close()


async def test_too_many_errors_close_the_session_with_421(start_system: StartSystem) -> None:
    system = await start_system(max_errors=3)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<bad")).startswith("501 ")
    assert (await wire.command("MAIL FROM:<bad")).startswith("501 ")
    reply = await wire.command("MAIL FROM:<bad")
    assert reply.startswith("501 ")
    assert await wire.reply() == "421 4.7.0 mx.test Too many errors, closing connection"
    assert await wire.closed()
    await wire.close()


async def test_an_idle_client_is_timed_out_with_421(start_system: StartSystem) -> None:
    system = await start_system(smtp_command_timeout=0.5)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.reply(timeout=5) == "421 4.4.2 mx.test Timeout exceeded, closing connection"
    assert await wire.closed()
    await wire.close()


async def test_an_idle_session_reaped_by_the_timeout_frees_its_connection_slot(
    start_system: StartSystem,
) -> None:
    system = await start_system(smtp_command_timeout=0.5, max_connections=1)
    idle = await system.wire()
    assert idle.greeting.startswith("220 ")
    refused = await Wire.open(system.smtp_port, greet=False)
    assert (await refused.reply()).startswith("421 4.7.0 ")  # the one slot is taken
    await refused.close()
    # The idle client says nothing more: the server times it out and closes it ...
    assert (await idle.reply(timeout=5)).startswith("421 4.4.2 ")
    assert await idle.closed()
    await idle.close()
    # ... and its slot serves the next client.
    nxt = await system.wire()
    assert nxt.greeting.startswith("220 ")
    assert await nxt.command("EHLO client.test") != ""
    await nxt.close()


async def test_a_stalled_data_transfer_is_timed_out(start_system: StartSystem) -> None:
    system = await start_system(smtp_command_timeout=30, smtp_data_timeout=0.5)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(b"Subject: slow\r\n")
    assert (await wire.reply(timeout=5)).startswith("421 4.4.2 ")
    assert await wire.closed()
    assert await system.entries() == []
    await wire.close()


async def test_a_slow_but_steady_data_transfer_is_not_timed_out(start_system: StartSystem) -> None:
    system = await start_system(smtp_command_timeout=0.8, smtp_data_timeout=0.5)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    for n in range(6):  # 1.8 s in all: longer than either timeout, but never idle for long
        await wire.send(f"Line: {n}\r\n".encode())
        await asyncio.sleep(0.3)
    await wire.send(b".\r\n")
    assert (await wire.reply()).startswith("250 2.0.0 Ok: queued as ")
    await wire.close()
