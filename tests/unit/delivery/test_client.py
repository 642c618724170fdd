"""The outbound SMTP client against a scripted remote MX: the bytes it sends, when it sends
them, and the result each recipient gets from the replies."""

from __future__ import annotations

import asyncio

import pytest

from empath.core import events
from empath.delivery import client, resolver
from tests.unit.delivery.remote import (
    PIPELINING_EHLO,
    PLAIN_EHLO,
    Remote,
    connection,
    greeted,
    job,
)

BODY = b"Subject: hi\r\n\r\nHello.\r\n"
WIRE_BODY = BODY + b".\r\n"  # 26 octets: the SIZE=26 the client declares


def outcomes(results: list[events.RecipientResult]) -> list[tuple[str, str, str]]:
    return [(r.address, r.outcome, r.reply) for r in results]


# Replies


async def test_a_multiline_reply_is_read_whole() -> None:
    remote = Remote()
    session = connection(remote)
    remote.reply("250-mx1.example.com", "250-first", "250 last")

    reply = await session.read_reply()

    assert reply == client.Reply(250, ("mx1.example.com", "first", "last"))
    assert str(reply) == "250 mx1.example.com first last"


async def test_ehlo_reads_the_extensions_of_a_multiline_reply() -> None:
    session = await greeted(Remote(), PIPELINING_EHLO)

    assert session.extensions == {
        "pipelining": "",
        "size": "10240000",
        "8bitmime": "",
        "smtputf8": "",
        "dsn": "",
    }
    assert session.supports("PIPELINING")
    assert session.size_limit == 10240000


async def test_a_server_that_refuses_ehlo_gets_helo_and_offers_nothing() -> None:
    remote = Remote()
    session = connection(remote)
    said = asyncio.create_task(session.ehlo("mx.test"))
    assert await remote.turn() == [b"EHLO mx.test\r\n"]
    remote.reply("502 5.5.1 EHLO not implemented")
    assert await remote.turn() == [b"HELO mx.test\r\n"]
    remote.reply("250 mx1.example.com")

    assert (await said).code == 250
    assert session.extensions == {}
    assert session.size_limit is None


@pytest.mark.parametrize(
    "script",
    [
        [b"250-one\r\n" * (client.MAX_REPLY_LINES + 1)],  # a reply that goes on and on
        [b"hello there\r\n"],  # not SMTP
        [b"25\r\n"],
        [b"250-partial\r\n250 no end of line"],  # then the remote hangs up
    ],
)
async def test_a_reply_that_is_not_a_proper_smtp_reply_loses_the_session(
    script: list[bytes],
) -> None:
    remote = Remote()
    session = connection(remote)
    remote.reply(*script)
    remote.hang_up()

    with pytest.raises(client.SessionLost):
        await session.read_reply()


async def test_a_reply_that_never_ends_times_out_and_breaks_the_session() -> None:
    remote = Remote()
    session = connection(remote, timeout=0.2)
    remote.reply("250-still going")  # and then nothing

    with pytest.raises(client.SessionLost, match="TimeoutError"):
        await session.read_reply()
    assert not session.usable


async def test_a_reply_that_trickles_in_within_the_timeout_per_line_still_times_out_whole() -> None:
    remote = Remote()
    session = connection(remote, timeout=0.5)
    reading = asyncio.create_task(session.read_reply())
    started = asyncio.get_running_loop().time()
    for _ in range(client.MAX_REPLY_LINES):
        if reading.done():
            break
        remote.reply("250-still going")  # every line in a fifth of the timeout
        await asyncio.sleep(0.1)

    with pytest.raises(client.SessionLost, match="TimeoutError"):
        await reading
    assert asyncio.get_running_loop().time() - started < 1.0
    assert not session.usable


async def test_control_characters_in_a_reply_never_reach_the_record() -> None:
    remote = Remote()
    session = connection(remote)
    remote.reply(b"550 5.1.1 no\rX-Injected: yes\x1b[2J\x00 user\r\n")

    reply = await session.read_reply()

    assert str(reply) == "550 5.1.1 no?X-Injected: yes?[2J? user"


# Transactions with PIPELINING


async def test_with_pipelining_mail_every_rcpt_and_data_go_out_in_one_write() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    sent = asyncio.create_task(
        client.transact(
            session,
            job("bob@example.com", "dave@example.com"),
            [
                events.Recipient(address="bob@example.com"),
                events.Recipient(address="dave@example.com"),
            ],
            BODY,
        )
    )

    assert await remote.turn() == [
        b"MAIL FROM:<alice@example.org> SIZE=26\r\n"
        b"RCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<dave@example.com>\r\n"
        b"DATA\r\n"
    ]
    remote.reply("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with .")
    assert await remote.turn() == [WIRE_BODY]
    remote.reply("250 2.0.0 Ok: queued as 4XyZ")

    assert outcomes(await sent) == [
        ("bob@example.com", "delivered", "250 2.0.0 Ok: queued as 4XyZ"),
        ("dave@example.com", "delivered", "250 2.0.0 Ok: queued as 4XyZ"),
    ]
    assert session.usable
    assert session.messages == 1
    assert session.clean  # the end of DATA answered ended the transaction: no RSET needed


async def test_each_recipient_gets_its_own_refusal() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [
        events.Recipient(address=a) for a in ("b@example.com", "c@example.com", "d@example.com")
    ]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply(
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "550 5.1.1 <c@example.com>: No such user",
        "452 4.2.2 <d@example.com>: Mailbox full",
        "354 Go ahead",
    )
    assert await remote.turn() == [WIRE_BODY]
    remote.reply("250 2.0.0 Ok: queued")

    assert outcomes(await sent) == [
        ("b@example.com", "delivered", "250 2.0.0 Ok: queued"),
        ("c@example.com", "failed", "550 5.1.1 <c@example.com>: No such user"),
        ("d@example.com", "deferred", "452 4.2.2 <d@example.com>: Mailbox full"),
    ]


@pytest.mark.parametrize(
    ("final", "outcome"),
    [("554 5.7.1 Message refused as spam", "failed"), ("451 4.3.0 Try again", "deferred")],
)
async def test_a_refusal_after_the_data_applies_to_every_accepted_recipient(
    final: str, outcome: str
) -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address=a) for a in ("b@example.com", "c@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("250 Ok", "250 Ok", "550 5.1.1 No such user", "354 Go ahead")
    await remote.turn()
    remote.reply(final)

    assert outcomes(await sent) == [
        ("b@example.com", outcome, final),
        ("c@example.com", "failed", "550 5.1.1 No such user"),
    ]
    assert session.clean  # refused or not, the transaction ended with the end of DATA


async def test_a_refused_data_command_sends_no_message() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("250 Ok", "250 Ok", "554 5.5.1 No valid recipients")

    assert outcomes(await sent) == [("b@example.com", "failed", "554 5.5.1 No valid recipients")]
    assert remote.unseen() == []
    assert not session.clean  # MAIL was accepted and never ended: an RSET before the next


async def test_when_every_recipient_was_refused_a_pipelined_data_is_ended_at_once() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("250 Ok", "550 5.1.1 No such user", "354 Go ahead")  # RFC 2920 allows this
    assert await remote.turn() == [b".\r\n"]  # an empty message, not the body
    remote.reply("554 5.5.1 No valid recipients")

    assert outcomes(await sent) == [("b@example.com", "failed", "550 5.1.1 No such user")]


async def test_a_session_lost_in_data_defers_the_accepted_recipients() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("250 Ok", "250 Ok", "354 Go ahead")
    await remote.turn()
    remote.hang_up()

    [result] = await sent
    assert result.outcome == "deferred"
    assert result.reply.startswith("451 4.4.2 mx1.example.com dropped the session in DATA")


async def test_a_421_to_pipelined_commands_is_a_temporary_error_for_the_next_mx() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply(*["421 4.7.0 mx1.example.com Too many connections"] * 3)

    with pytest.raises(resolver.DeliveryError) as error:
        await sent
    assert error.value.temporary
    assert error.value.reply == "421 4.7.0 mx1.example.com Too many connections"
    assert not session.usable


# Transactions without PIPELINING


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    recipients = [events.Recipient(address=a) for a in ("b@example.com", "c@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    assert await remote.turn() == [b"MAIL FROM:<alice@example.org> SIZE=26\r\n"]
    remote.reply("250 2.1.0 Ok")
    assert await remote.turn() == [b"RCPT TO:<b@example.com>\r\n"]
    remote.reply("250 2.1.5 Ok")
    assert await remote.turn() == [b"RCPT TO:<c@example.com>\r\n"]
    remote.reply("550 5.1.1 No such user")
    assert await remote.turn() == [b"DATA\r\n"]
    remote.reply("354 Go ahead")
    assert await remote.turn() == [WIRE_BODY]
    remote.reply("250 2.0.0 Ok: queued")

    assert outcomes(await sent) == [
        ("b@example.com", "delivered", "250 2.0.0 Ok: queued"),
        ("c@example.com", "failed", "550 5.1.1 No such user"),
    ]


async def test_without_pipelining_a_refused_mail_sends_no_recipient() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    recipients = [events.Recipient(address=a) for a in ("b@example.com", "c@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("553 5.7.1 Sender refused")

    assert outcomes(await sent) == [
        ("b@example.com", "failed", "553 5.7.1 Sender refused"),
        ("c@example.com", "failed", "553 5.7.1 Sender refused"),
    ]
    assert remote.unseen() == []
    assert session.usable  # the session may carry the next message


async def test_without_pipelining_no_data_when_every_recipient_was_refused() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    recipients = [events.Recipient(address=a) for a in ("b@example.com", "c@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("250 Ok")
    await remote.turn()
    remote.reply("550 5.1.1 No such user")
    await remote.turn()
    remote.reply("450 4.2.1 Try later")

    assert outcomes(await sent) == [
        ("b@example.com", "failed", "550 5.1.1 No such user"),
        ("c@example.com", "deferred", "450 4.2.1 Try later"),
    ]
    assert remote.unseen() == []


async def test_without_pipelining_a_421_at_mail_is_a_temporary_error_with_that_reply() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("421 4.3.2 Shutting down")

    with pytest.raises(resolver.DeliveryError) as error:
        await sent
    assert error.value.temporary
    assert error.value.reply == "421 4.3.2 Shutting down"
    assert not session.usable
    assert remote.unseen() == []


@pytest.mark.parametrize(
    "script",
    [
        [b"250-one\r\n" * (client.MAX_REPLY_LINES + 1)],
        [b"250-and no end"],
    ],
)
async def test_a_broken_reply_to_mail_is_a_temporary_error_for_the_next_mx(
    script: list[bytes],
) -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO, timeout=0.3)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply(*script)

    with pytest.raises(resolver.DeliveryError) as error:
        await sent
    assert error.value.temporary
    assert error.value.reply.startswith("451 4.4.2 mx1.example.com dropped the session")
    assert not session.usable


# What the client asks for, and what it refuses to send


async def test_dsn_parameters_go_along_when_the_remote_offers_dsn() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    bob = events.Recipient(
        address="bob@example.com", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;Bob+2B@x.test"
    )
    sent = asyncio.create_task(
        client.transact(
            session,
            job(bob, ret="HDRS", envid="QQ+2B314159", body="8BITMIME", smtputf8=True),
            [bob],
            BODY,
        )
    )

    assert await remote.turn() == [
        b"MAIL FROM:<alice@example.org> SIZE=26 BODY=8BITMIME SMTPUTF8"
        b" RET=HDRS ENVID=QQ+2B314159\r\n"
        b"RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2B@x.test\r\n"
        b"DATA\r\n"
    ]
    remote.reply("250 Ok", "250 Ok", "354 Go ahead")
    await remote.turn()
    remote.reply("250 2.0.0 Ok")

    [result] = await sent
    assert result.dsn  # the remote will send the success notice itself


async def test_without_dsn_at_the_remote_the_dsn_parameters_stay_here() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    bob = events.Recipient(address="bob@example.com", notify=("SUCCESS",), orcpt="rfc822;b@x.test")
    sent = asyncio.create_task(
        client.transact(session, job(bob, ret="FULL", envid="e1"), [bob], BODY)
    )

    assert await remote.turn() == [b"MAIL FROM:<alice@example.org> SIZE=26\r\n"]
    remote.reply("250 Ok")
    assert await remote.turn() == [b"RCPT TO:<bob@example.com>\r\n"]
    remote.reply("250 Ok")
    await remote.turn()
    remote.reply("354 Go ahead")
    await remote.turn()
    remote.reply("250 2.0.0 Ok")

    [result] = await sent
    assert result.outcome == "delivered"
    assert not result.dsn  # so the spool sends the success notice


@pytest.mark.parametrize(
    ("ehlo", "fields", "reply"),
    [
        (
            ("250-mx1.example.com", "250-PIPELINING", "250 SIZE 20"),
            {},
            "552 5.3.4 Message is bigger than mx1.example.com accepts (20)",
        ),
        (PLAIN_EHLO, {"smtputf8": True}, "553 5.6.7 mx1.example.com does not support SMTPUTF8"),
        (
            ("250-mx1.example.com", "250 PIPELINING"),
            {"body": "8BITMIME"},
            "554 5.6.3 mx1.example.com does not support 8BITMIME",
        ),
    ],
)
async def test_a_message_the_remote_cannot_take_fails_without_a_transaction(
    ehlo: tuple[str, ...], fields: dict[str, object], reply: str
) -> None:
    remote = Remote()
    session = await greeted(remote, ehlo)
    recipients = [events.Recipient(address=a) for a in ("b@example.com", "c@example.com")]

    results = await client.transact(session, job(*recipients, **fields), recipients, BODY)

    assert outcomes(results) == [
        ("b@example.com", "failed", reply),
        ("c@example.com", "failed", reply),
    ]
    assert remote.unseen() == []


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"bare\nlf\rand cr\r\n", b"bare\r\nlf\r\nand cr\r\n.\r\n"),
        (b".starts\r\n..two\r\nin.side\r\n.\r\n", b"..starts\r\n...two\r\nin.side\r\n..\r\n.\r\n"),
        (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),  # a lone dot is never the end of data
        (b"a\r\r\nb\n\rc", b"a\r\n\r\nb\r\n\r\nc\r\n.\r\n"),  # each ending counts once
        (b"\r.x\r\n\n.", b"\r\n..x\r\n\r\n..\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_the_body_is_sent_with_crlf_lines_and_dots_stuffed(body: bytes, wire: bytes) -> None:
    assert client.wire_body(body) == wire


async def test_rset_and_quit_keep_or_end_the_session() -> None:
    remote = Remote()
    session = connection(remote)

    reset = asyncio.create_task(session.reset())
    assert await remote.turn() == [b"RSET\r\n"]
    remote.reply("250 2.0.0 Ok")
    assert await reset

    closed = asyncio.create_task(session.close())
    assert await remote.turn() == [b"QUIT\r\n"]
    remote.reply("221 2.0.0 Bye")
    await closed
    assert remote.closed
    assert not session.usable


# Sessions the remote breaks


async def test_a_reply_line_longer_than_the_stream_limit_loses_the_session() -> None:
    remote = Remote()
    session = await greeted(remote, PLAIN_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply(b"250 " + b"x" * 70_000 + b"\r\n")

    with pytest.raises(resolver.DeliveryError) as error:
        await sent
    assert error.value.temporary
    assert not session.usable


async def test_a_session_the_remote_hung_up_is_no_longer_usable() -> None:
    remote = Remote()
    session = connection(remote)

    reset = asyncio.create_task(session.reset())
    await remote.turn()
    remote.hang_up()

    assert not await reset
    assert not session.usable


async def test_a_421_and_hang_up_after_pipelined_commands_keeps_the_421() -> None:
    remote = Remote()
    session = await greeted(remote, PIPELINING_EHLO)
    recipients = [events.Recipient(address="b@example.com")]
    sent = asyncio.create_task(client.transact(session, job(*recipients), recipients, BODY))

    await remote.turn()
    remote.reply("421 4.7.0 mx1.example.com Too many connections")
    remote.hang_up()  # as a server that says 421 does (RFC 5321 §3.8)

    with pytest.raises(resolver.DeliveryError) as error:
        await sent
    assert error.value.reply == "421 4.7.0 mx1.example.com Too many connections"


async def test_a_remote_that_stops_reading_a_body_times_out_and_breaks_the_session() -> None:
    """A write the socket cannot take at once is still bounded by the command timeout (on a
    real loopback socket: the kernel's buffers fill and the writer must wait)."""
    stalled = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stalled.wait()
        writer.close()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = client.Connection(
        reader=reader, writer=writer, hop=resolver.Hop("mx", "127.0.0.1", port), timeout=0.5
    )
    try:
        with pytest.raises(client.SessionLost, match="TimeoutError"):
            await asyncio.wait_for(session.send(b"x" * (64 << 20)), 10)
        assert not session.usable
    finally:
        stalled.set()
        writer.close()
        server.close()
        await server.wait_closed()
