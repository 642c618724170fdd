"""Every command and sequence error of the SMTP dialogue, as a client sees it on the wire."""

from __future__ import annotations

import re

from tests.system import System

ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


async def test_greeting_names_the_host_and_empath(system: System) -> None:
    wire = await system.wire()
    assert wire.greeting == "220 mx.test Empath ESMTP"
    await wire.close()


async def test_ehlo_advertises_the_extensions(system: System) -> None:
    wire = await system.wire()
    reply = await wire.command("EHLO client.test")
    assert reply.splitlines() == [
        "250-mx.test",
        "250-PIPELINING",
        f"250-SIZE {system.settings.max_message_size}",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250-DSN",
        "250 HELP",
    ]
    await wire.close()


async def test_helo_is_answered_without_extensions(system: System) -> None:
    wire = await system.wire()
    assert await wire.command("HELO client.test") == "250 mx.test"
    await wire.close()


async def test_ehlo_without_a_hostname_is_a_syntax_error(system: System) -> None:
    wire = await system.wire()
    assert (await wire.command("EHLO")).startswith("501 5.5.4 ")
    await wire.close()


async def test_mail_before_helo_is_rejected_with_503(system: System) -> None:
    wire = await system.wire()
    assert (await wire.command("MAIL FROM:<a@example.org>")).startswith("503 5.5.1 ")
    await wire.close()


async def test_rcpt_before_mail_is_rejected_with_503(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("RCPT TO:<u@example.com>") == "503 5.5.1 Error: need MAIL command"
    await wire.close()


async def test_data_before_rcpt_is_rejected_with_503(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("DATA") == "503 5.5.1 Error: need MAIL command"
    await wire.command("MAIL FROM:<a@example.org>")
    assert await wire.command("DATA") == "503 5.5.1 Error: need RCPT command"
    await wire.close()


async def test_nested_mail_is_rejected_with_503(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("MAIL FROM:<a@example.org>") == "250 2.1.0 Sender OK"
    assert await wire.command("MAIL FROM:<b@example.org>") == "503 5.5.1 Error: nested MAIL command"
    await wire.close()


async def test_rset_ends_the_transaction(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert await wire.command("RSET") == "250 2.0.0 OK"
    assert await wire.command("DATA") == "503 5.5.1 Error: need MAIL command"
    assert await wire.command("MAIL FROM:<b@example.org>") == "250 2.1.0 Sender OK"
    await wire.close()


async def test_noop_vrfy_help_and_quit_answer_with_enhanced_codes(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("NOOP") == "250 2.0.0 OK"
    assert (await wire.command("VRFY <u@example.com>")).startswith("252 2.5.0 ")
    help_reply = await wire.command("HELP")
    assert help_reply.startswith("250 2.0.0 Supported commands: ")
    for command in ("DATA", "EHLO", "HELO", "MAIL", "NOOP", "QUIT", "RCPT", "RSET", "VRFY"):
        assert command in help_reply
    assert await wire.command("QUIT") == "221 2.0.0 Bye"
    assert await wire.closed()


async def test_unknown_command_is_rejected_with_500(system: System) -> None:
    wire = await system.wire()
    assert (await wire.command("FOO bar")).startswith("500 5.5.2 ")
    await wire.close()


async def test_expn_is_not_implemented(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("EXPN staff")).startswith("502 5.5.1 ")
    await wire.close()


async def test_null_sender_is_accepted_for_bounces(system: System) -> None:
    wire = await system.wire()
    reply = await wire.transaction("", ["u@example.com"], b"Subject: bounce\r\n\r\nx\r\n")
    queue_id = reply.rsplit(" ", 1)[1]
    assert (await system.entry(queue_id)).sender == ""
    await wire.close()


async def test_malformed_addresses_are_rejected_with_553(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<not an address>")).startswith("553 5.1.7 ")
    assert (await wire.command("MAIL FROM:<a@example.org")).startswith("501 5.5.4 ")
    await wire.command("MAIL FROM:<a@example.org>")
    assert (await wire.command("RCPT TO:<@example.com>")).startswith("553 5.1.3 ")
    assert (await wire.command("RCPT TO:<postmaster>")) == (
        "550 5.1.1 <postmaster>: No postmaster mailbox is configured here"
    )
    assert (await wire.command("RCPT TO:<u@example.com> NOTIFY")).startswith("501 5.5.4 ")
    await wire.close()


async def test_a_recipient_named_twice_is_one_recipient(system: System) -> None:
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org",
        ["u@example.com", "u@EXAMPLE.com", "U@example.com"],
        b"Subject: twice\r\n\r\nx\r\n",
    )
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    # The domain is matched in any case; the local part as written (RFC 5321 §2.4).
    assert [r.address for r in entry.recipients] == ["u@example.com", "U@example.com"]
    await wire.close()


async def test_unknown_parameters_are_rejected_with_555(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<a@example.org> FOO=1")).startswith("555 5.5.4 ")
    assert (await wire.command("MAIL FROM:<a@example.org> BODY=BINARYMIME")).startswith(
        "501 5.5.4 "
    )
    assert (await wire.command("MAIL FROM:<a@example.org> SIZE=10 SIZE=10")).startswith(
        "501 5.5.4 "
    )
    await wire.command("MAIL FROM:<a@example.org>")
    assert (await wire.command("RCPT TO:<u@example.com> BAR")).startswith("555 5.5.4 ")
    await wire.close()


async def test_parameters_need_ehlo(system: System) -> None:
    wire = await system.wire()
    await wire.command("HELO client.test")
    assert (await wire.command("MAIL FROM:<a@example.org> SIZE=10")).startswith("501 5.5.4 ")
    await wire.close()


async def test_non_ascii_address_needs_smtputf8(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<jörg@example.org>")).startswith("553 5.6.7 ")
    assert await wire.command("MAIL FROM:<jörg@example.org> SMTPUTF8") == "250 2.1.0 Sender OK"
    assert await wire.command("RCPT TO:<δοκιμή@example.com>") == "250 2.1.5 Recipient OK"
    assert (await wire.command("DATA")).startswith("354")
    await wire.send("Subject: ünïcode\r\n\r\nκείμενο\r\n.\r\n".encode())
    reply = await wire.reply()
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    assert entry.smtputf8
    assert entry.sender == "jörg@example.org"
    assert entry.recipients[0].address == "δοκιμή@example.com"
    await wire.close()


async def test_dsn_parameters_are_stored_with_the_envelope(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (
        await wire.command(
            "MAIL FROM:<a@example.org> RET=HDRS ENVID=Q+2Bid-7 BODY=8BITMIME SIZE=60"
        )
    ) == "250 2.1.0 Sender OK"
    assert (
        await wire.command(
            "RCPT TO:<u@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x@example.com"
        )
    ) == "250 2.1.5 Recipient OK"
    assert await wire.command("RCPT TO:<v@example.com> NOTIFY=NEVER") == "250 2.1.5 Recipient OK"
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n")
    entry = await system.entry((await wire.reply()).rsplit(" ", 1)[1])
    assert (entry.ret, entry.envid, entry.body) == ("HDRS", "Q+2Bid-7", "8BITMIME")
    assert [(r.address, r.notify, r.orcpt) for r in entry.recipients] == [
        ("u@example.com", ("SUCCESS", "DELAY"), "rfc822;u+40x@example.com"),
        ("v@example.com", ("NEVER",), None),
    ]
    await wire.close()


async def test_invalid_dsn_parameters_are_rejected(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<a@example.org> RET=ALL")).startswith("501 5.5.4 ")
    assert (await wire.command("MAIL FROM:<a@example.org> ENVID=a=b")).startswith("501 5.5.4 ")
    await wire.command("MAIL FROM:<a@example.org>")
    assert (await wire.command("RCPT TO:<u@example.com> NOTIFY=NEVER,SUCCESS")).startswith(
        "501 5.5.4 "
    )
    assert (await wire.command("RCPT TO:<u@example.com> ORCPT=u@example.com")).startswith(
        "501 5.5.4 "
    )
    await wire.close()


async def test_pipelined_commands_get_their_replies_in_order(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.send(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<u@example.com>\r\nRCPT TO:<u@elsewhere.test>\r\n"
        b"RCPT TO:<bad>\r\nDATA\r\n"
    )
    replies = [await wire.reply() for _ in range(5)]
    assert replies[:3] == [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
    ]
    assert replies[3].startswith("553 5.1.3 ")
    assert replies[4].startswith("354 ")
    await wire.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@example.org>\r\nQUIT\r\n")
    queued = await wire.reply()
    assert queued.startswith("250 2.0.0 Ok: queued as ")
    assert await wire.reply() == "250 2.1.0 Sender OK"
    assert await wire.reply() == "221 2.0.0 Bye"
    entry = await system.entry(queued.rsplit(" ", 1)[1])
    assert [r.address for r in entry.recipients] == ["u@example.com", "u@elsewhere.test"]
    await wire.close()


async def test_every_reply_after_the_greeting_has_an_enhanced_code(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    for command in [
        "NOOP",
        "RSET",
        "VRFY",
        "MAIL FROM:<x",
        "RCPT TO:<u@example.com>",
        "DATA",
        "BOGUS",
        "HELP",
        "STARTTLS",
        "AUTH PLAIN",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<u@example.com>",
        "QUIT",
    ]:
        reply = await wire.command(command)
        assert ENHANCED.match(reply), (command, reply)
    await wire.close()
