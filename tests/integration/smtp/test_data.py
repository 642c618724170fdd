"""DATA: what ends a message (only <CRLF>.<CRLF>), dot-stuffing, and the trace header."""

from __future__ import annotations

import pytest

from tests.system import System

SMUGGLED = (
    b"MAIL FROM:<evil@elsewhere.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nowned\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\n.\r"],
    ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR", "CRLF.CR", "CR.CRLF", "LF.CR"],
)
async def test_a_bare_lf_or_cr_never_ends_data_nor_smuggles_a_message(
    system: System, fake_end: bytes
) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(b"Subject: first\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n")
    reply = await wire.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert await wire.command("NOOP") == "250 2.0.0 OK"  # no reply was left over
    await system.entry(reply.rsplit(" ", 1)[1])
    entries = await system.entries()
    assert [e.sender for e in entries] == ["a@example.org"]
    body = await system.objects.get(entries[0].body_key)
    # Transparency (RFC 5321 §4.5.2): a dot opening a CRLF-delimited line is removed.
    assert body.endswith((b"hello" + fake_end).replace(b"\r\n.", b"\r\n") + SMUGGLED)
    await wire.close()


async def test_dot_stuffing_is_undone(system: System) -> None:
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org", ["u@example.com"], b"Subject: dots\r\n\r\n..\r\n..leading\r\n.x\r\n"
    )
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    body = await system.objects.get(entry.body_key)
    assert body.endswith(b"Subject: dots\r\n\r\n.\r\n.leading\r\nx\r\n")
    await wire.close()


@pytest.mark.parametrize(
    "pieces",
    [
        [b"Subject: pieces\r\n\r\nfirst\r\n..stuf", b"fed\r\nlast\r", b"\n.", b"\r\nNOOP\r\n"],
        [b"Subject: pieces\r\n\r\nfirst\r\n.", b".stuffed\r\nlast\r\n", b".\r\nNOOP\r\n"],
    ],
    ids=["split-inside-lines", "split-after-a-dot"],
)
async def test_data_in_pieces_is_read_as_one_message_and_what_follows_the_dot_is_a_command(
    system: System, pieces: list[bytes]
) -> None:
    """Whole lines are taken as they come, a piece of a line waits for its end, and the
    command pipelined behind the final dot is answered after the message."""
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    for piece in pieces:
        await wire.send(piece)
    reply = await wire.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert await wire.reply() == "250 2.0.0 OK"
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    body = await system.objects.get(entry.body_key)
    assert body.endswith(b"Subject: pieces\r\n\r\nfirst\r\n.stuffed\r\nlast\r\n")
    await wire.close()


async def test_an_empty_message_is_accepted(system: System) -> None:
    wire = await system.wire()
    reply = await wire.transaction("a@example.org", ["u@example.com"], b"")
    assert reply.startswith("250 2.0.0 ")
    await wire.close()


async def test_eight_bit_data_is_kept_byte_for_byte(system: System) -> None:
    wire = await system.wire()
    raw = b"Subject: bytes\r\n\r\n\xff\xfe\x80 latin-1 \xe9\r\n\x00nul\r\n"
    reply = await wire.transaction("a@example.org", ["u@example.com"], raw)
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    assert (await system.objects.get(entry.body_key)).endswith(raw)
    await wire.close()


async def test_a_received_header_is_prepended(system: System) -> None:
    wire = await system.wire()
    reply = await wire.transaction("a@example.org", ["u@example.com"], b"Subject: t\r\n\r\nx\r\n")
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    body = await system.objects.get(entry.body_key)
    header, _, rest = body.partition(b"Subject: t\r\n")
    lines = header.decode().split("\r\n")
    assert lines[0] == "Received: from client.test ([127.0.0.1])"
    assert lines[1] == f"\tby mx.test (Empath) with ESMTP id {entry.id}"
    assert lines[2].startswith("\tfor <u@example.com>; ")
    assert lines[2].endswith(" +0000")
    assert rest == b"\r\nx\r\n"
    assert entry.size == len(body)
    await wire.close()


async def test_the_received_header_names_no_recipient_when_there_are_several(
    system: System,
) -> None:
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org", ["u@example.com", "v@example.com"], b"Subject: t\r\n\r\nx\r\n"
    )
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    body = await system.objects.get(entry.body_key)
    assert b"for <" not in body.split(b"Subject:")[0]
    await wire.close()


async def test_the_received_event_carries_trace_context(system: System) -> None:
    from empath.core import names

    sub = await system.bus.js.subscribe(names.RECEIVED_SUBJECT, ordered_consumer=True)
    wire = await system.wire()
    reply = await wire.transaction("a@example.org", ["u@example.com"], b"Subject: t\r\n\r\nx\r\n")
    msg = await sub.next_msg(timeout=5)
    await sub.unsubscribe()
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == reply.rsplit(" ", 1)[1]
    version, trace_id, _span_id, _flags = msg.headers["traceparent"].split("-")
    assert version == "00"
    assert len(trace_id) == 32
    assert int(trace_id, 16) != 0
    await wire.close()


async def test_a_small_message_travels_in_its_event_as_stored_and_a_large_one_does_not(
    system: System,
) -> None:
    from empath.core import events, names

    sub = await system.bus.js.subscribe(names.RECEIVED_SUBJECT, ordered_consumer=True)
    wire = await system.wire()
    small = b"Subject: small\r\n\r\n" + b"x" * 500 + b"\r\n"
    large = b"Subject: large\r\n\r\n" + (b"y" * 998 + b"\r\n") * 70  # over 64 KiB
    for content in (small, large):
        reply = await wire.transaction("a@example.org", ["u@example.com"], content)
        assert reply.startswith("250 "), reply
    seen = [events.decode((await sub.next_msg(timeout=5)).data, events.Received) for _ in "ab"]
    await sub.unsubscribe()
    await wire.close()

    first, second = seen
    stored = await system.objects.get(first.body_key)
    assert first.body == stored  # the Received header and all, byte for byte
    assert stored.endswith(small)
    assert first.size == len(stored)
    assert second.body is None
    assert (await system.objects.get(second.body_key)).endswith(large)
