"""Relay policy, STARTTLS, AUTH and the submission listener, with trustme certificates."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
from base64 import b64encode
from pathlib import Path

import aiosmtplib
import bcrypt
import pytest
import trustme

from empath.core import bodies, errors, settings
from tests.servers import free_port
from tests.system import StartSystem, System
from tests.tls_auth import PASSWORD, plain, tls_wire
from tests.waiting import eventually
from tests.wire import Wire

EMPATH = str(Path(sys.executable).parent / "empath")


@pytest.fixture
async def untrusted(start_system: StartSystem, tls_files: dict[str, Path]) -> System:
    """A server that does not trust loopback: the tests' client is a stranger to it."""
    return await start_system(
        trusted_networks=["10.99.0.0/16"],
        **tls_files,
    )


async def test_a_stranger_may_send_to_a_relay_domain(untrusted: System) -> None:
    wire = await untrusted.wire()
    reply = await wire.transaction(
        "a@elsewhere.test", ["u@example.com"], b"Subject: in\r\n\r\nx\r\n"
    )
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    await wire.close()


async def test_a_stranger_may_not_relay_elsewhere(untrusted: System) -> None:
    wire = await untrusted.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.com>")
    for target in (
        "u@elsewhere.test",
        "u@sub.example.com",
        "u@example.com.evil.test",
        "u@[127.0.0.1]",
        '"u@elsewhere.test"@elsewhere.test',
    ):
        reply = await wire.command(f"RCPT TO:<{target}>")
        assert reply.startswith("554 5.7.1 "), (target, reply)
        assert "Relay access denied" in reply
    assert await wire.command("RCPT TO:<U@EXAMPLE.COM.>") == "250 2.1.5 Recipient OK"
    await wire.close()


async def test_a_trusted_network_may_relay_anywhere(start_system: StartSystem) -> None:
    system = await start_system(trusted_networks=["127.0.0.0/8"], relay_domains=[])
    wire = await system.wire()
    reply = await wire.transaction(
        "a@example.org", ["u@elsewhere.test"], b"Subject: out\r\n\r\nx\r\n"
    )
    assert reply.startswith("250 2.0.0 ")
    await wire.close()


async def test_nothing_relays_when_the_settings_name_nothing(start_system: StartSystem) -> None:
    system = await start_system(trusted_networks=[], relay_domains=[])
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org>")
    assert (await wire.command("RCPT TO:<u@example.com>")).startswith("554 5.7.1 ")
    await wire.close()


async def test_postmaster_takes_mail_from_anyone_into_the_mailbox_it_names(
    start_system: StartSystem,
) -> None:
    """RFC 5321 §4.5.1: `<postmaster>`, without a domain, and postmaster at the server's own
    name are accepted from anyone, even where nothing else would relay."""
    system = await start_system(
        trusted_networks=[], relay_domains=[], postmaster="hostmaster@ops.example.net"
    )
    wire = await system.wire()
    await wire.command("EHLO stranger.test")
    await wire.command("MAIL FROM:<complaint@elsewhere.test>")
    assert await wire.command("RCPT TO:<Postmaster>") == "250 2.1.5 Recipient OK"
    assert await wire.command("RCPT TO:<postmaster@MX.test>") == "250 2.1.5 Recipient OK"
    assert (await wire.command("RCPT TO:<postmaster@other.test>")).startswith("554 5.7.1 ")
    assert (await wire.command("RCPT TO:<hostmaster@ops.example.net>")).startswith("554 5.7.1 ")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(b"Subject: abuse report\r\n\r\nsee attached\r\n.\r\n")
    reply = await wire.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    # Postmaster by two names is one recipient: the mailbox it stands for, once.
    assert [r.address for r in entry.recipients] == ["hostmaster@ops.example.net"]
    await wire.close()


def test_a_postmaster_setting_must_be_an_address() -> None:
    with pytest.raises(errors.ConfigurationError, match="EMPATH_POSTMASTER"):
        settings.load(environment=False, hostname="mx.test", postmaster="postmaster")


async def test_starttls_is_offered_and_auth_only_after_it(
    untrusted: System, client_tls: ssl.SSLContext
) -> None:
    wire = await untrusted.wire()
    ehlo = await wire.command("EHLO client.test")
    assert "250-STARTTLS" in ehlo.splitlines()
    assert "AUTH" not in ehlo
    assert (await wire.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).startswith("538 5.7.11 ")
    await wire.starttls(client_tls)
    ehlo = await wire.command("EHLO client.test")
    assert "STARTTLS" not in ehlo
    assert "250-AUTH PLAIN LOGIN" in ehlo.splitlines()
    await wire.close()


async def test_starttls_discards_commands_sent_with_it_in_plain_text(
    untrusted: System, client_tls: ssl.SSLContext
) -> None:
    wire = await untrusted.wire()
    await wire.command("EHLO client.test")
    await wire.send(b"STARTTLS\r\nMAIL FROM:<injected@elsewhere.test>\r\n")
    assert (await wire.reply()).startswith("220 2.0.0 ")
    await wire.writer.start_tls(client_tls, server_hostname="mx.test")
    # The injected MAIL never happened: the TLS session starts with no transaction.
    assert (await wire.command("RCPT TO:<u@example.com>")).startswith("503 ")
    await wire.close()


async def test_auth_plain_over_tls_lets_a_user_relay(
    untrusted: System, client_tls: ssl.SSLContext
) -> None:
    wire = await tls_wire(untrusted, client_tls)
    assert await wire.command(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
        "235 2.7.0 Authentication successful"
    )
    reply = await wire.transaction(
        "alice@example.com", ["friend@elsewhere.test"], b"Subject: out\r\n\r\nx\r\n", ehlo=False
    )
    assert reply.startswith("250 2.0.0 ")
    entry = await untrusted.entry(reply.rsplit(" ", 1)[1])
    assert entry.client.authenticated_as == "alice"
    assert entry.client.tls
    body = await bodies.Bodies(objects=untrusted.objects, js=untrusted.bus.js).get(entry)
    assert b"with ESMTPSA id " + entry.id.encode() in body
    await wire.close()


async def test_auth_login_with_a_wrong_password_is_refused_with_535(
    untrusted: System, client_tls: ssl.SSLContext
) -> None:
    wire = await tls_wire(untrusted, client_tls)
    assert (await wire.command("AUTH LOGIN")).startswith("334 ")
    assert (await wire.command(b64encode(b"alice").decode())).startswith("334 ")
    assert await wire.command(b64encode(b"wrong").decode()) == (
        "535 5.7.8 Authentication credentials invalid"
    )
    assert (await wire.command(f"AUTH PLAIN {plain('mallory', PASSWORD)}")).startswith("535 5.7.8")
    await wire.command("MAIL FROM:<alice@example.com>")
    assert (await wire.command("RCPT TO:<x@elsewhere.test>")).startswith("554 5.7.1 ")
    await wire.close()


async def test_auth_is_refused_where_no_credentials_are_configured(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("AUTH PLAIN AGFsaWNlAHg=") == "502 5.5.1 AUTH is not available here"
    await wire.close()


async def test_the_submission_listener_requires_auth(
    start_system: StartSystem, tls_files: dict[str, Path], client_tls: ssl.SSLContext
) -> None:
    system = await start_system(
        submission_listen=f"127.0.0.1:{free_port()}", relay_domains=[], **tls_files
    )
    wire = await system.wire(system.submission_port)
    await wire.command("EHLO client.test")
    assert (await wire.command("MAIL FROM:<alice@example.com>")).startswith("530 5.7.0 ")
    await wire.close()

    # A real client library, as a mail user agent would submit.
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=system.submission_port,
        tls_context=client_tls,
        start_tls=True,
    )
    await client.connect()
    await client.login("alice", PASSWORD)
    errors, response = await client.sendmail(
        "alice@example.com", ["bob@elsewhere.test"], b"Subject: submitted\r\n\r\nhi\r\n"
    )
    await client.quit()
    assert errors == {}
    assert response.startswith("2.0.0 Ok: queued as ")
    entry = await system.entry(response.rsplit(" ", 1)[1])
    assert entry.client.listener == "submission"
    assert entry.client.authenticated_as == "alice"


def peer_cert(wire: Wire) -> bytes:
    """The certificate the server presented in this session (DER)."""
    return bytes(wire.writer.get_extra_info("ssl_object").getpeercert(binary_form=True))


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


async def test_a_renewed_certificate_and_new_users_are_taken_without_a_restart(
    start_system: StartSystem,
    tls_files: dict[str, Path],
    ca: trustme.CA,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As cert-manager renews a Secret and the kubelet rewrites its volume."""
    system = await start_system(tls_reload_interval=0.1, **tls_files)
    before = await tls_wire(system, client_tls)
    first = peer_cert(before)

    renewed = ca.issue_cert("mx.test", "127.0.0.1")
    renewed.private_key_and_cert_chain_pem.write_to_path(str(tls_files["tls_cert_file"]))
    renewed.private_key_pem.write_to_path(str(tls_files["tls_key_file"]))
    hashed = bcrypt.hashpw(b"bob-password", bcrypt.gensalt(rounds=4)).decode()
    tls_files["auth_credentials_file"].write_text(f"bob:{hashed}\n")

    async def renewed_session() -> Wire | None:
        wire = await tls_wire(system, client_tls)
        if peer_cert(wire) != first:
            return wire
        await wire.close()
        return None

    after = await eventually(renewed_session, what="a session with the renewed certificate")
    assert after is not None
    assert peer_cert(after) == der(renewed)
    # The users changed with it: bob is in, alice is out.
    reply = await eventually(
        lambda: after.command(f"AUTH PLAIN {plain('bob', 'bob-password')}"),
        until=lambda reply: reply.startswith("235"),
        what="bob's login to be taken",
    )
    assert reply == "235 2.7.0 Authentication successful"
    other = await tls_wire(system, client_tls)
    assert (await other.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).startswith("535 ")
    # The session that began before the renewal kept its certificate.
    assert peer_cert(before) == first

    # A half-written certificate is not taken: the last good one stays in service.
    caplog.set_level(logging.WARNING, logger="empath.ingress.reload")
    tls_files["tls_cert_file"].write_text("-----BEGIN CERTIFICATE-----\ntruncated")
    await eventually(
        lambda: [m for m in caplog.messages if m.startswith("TLS certificate changed but")],
        what="the reloader to look at the half-written certificate",
    )
    again = await tls_wire(system, client_tls)
    assert peer_cert(again) == der(renewed)
    for wire in (before, after, other, again):
        await wire.close()


async def test_a_line_from_empath_hash_password_lets_its_user_log_in(
    start_system: StartSystem,
    tls_files: dict[str, Path],
    client_tls: ssl.SSLContext,
) -> None:
    """The README's way to make the credentials file: `empath hash-password USER`, the password
    on stdin, its line appended to the file, and ingress's own check takes it."""
    secret = "carol's secret"
    made = await asyncio.to_thread(
        subprocess.run,
        [EMPATH, "hash-password", "carol", "--rounds", "10"],
        input=f"{secret}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    user, _, hashed = line.partition(":")
    assert (user, hashed[:7]) == ("carol", "$2b$10$")
    assert secret not in line
    with tls_files["auth_credentials_file"].open("a") as credentials:
        credentials.write(line + "\n")

    system = await start_system(trusted_networks=["10.99.0.0/16"], **tls_files)
    wire = await tls_wire(system, client_tls)
    wrong = plain("carol", secret.upper())
    assert (await wire.command(f"AUTH PLAIN {wrong}")).startswith("535 5.7.8 ")
    assert await wire.command(f"AUTH PLAIN {plain('carol', secret)}") == (
        "235 2.7.0 Authentication successful"
    )
    await wire.close()
    # The file's other user is still in: the line was added, nothing replaced.
    other = await tls_wire(system, client_tls)
    assert (await other.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).startswith("235 ")
    await other.close()
