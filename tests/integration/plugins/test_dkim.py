"""The DKIM signing plugin that ships (`"module": "dkim"`) in a real ingress, spool and delivery:
what arrives at the remote MX verifies with dkimpy against the public key the tests' DNS server
publishes, and only mail from trusted or authenticated clients is signed."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from empath.core import errors
from tests.dkim_keys import publish, write_key
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
from tests.remote import Remote
from tests.system import StartSystem
from tests.tls_auth import as_alice

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: u@dest.test\r\n"
    b"Subject: signed\r\n"
    b"Date: Mon, 07 Dec 2026 15:00:00 +0000\r\n"
    b"Message-ID: <dkim-test@sender.test>\r\n"
    b"\r\n"
    b"The body is covered by the signature.\r\n"
    b"  Trailing spaces and a blank line at the end.   \r\n"
    b"\r\n"
)


def dnsfunc(dns_server: DnsServer) -> Callable[..., bytes]:
    """dkimpy's key lookup, asking the tests' DNS server (over UDP, with dnspython)."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes:
        qname = name.decode() if isinstance(name, bytes) else name
        query = dns.message.make_query(qname, dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", timeout=timeout, port=dns_server.port)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return b""

    return lookup


async def verified(data: bytes, dns_server: DnsServer) -> bool:
    # In a thread: the DNS server answers on this test's event loop.
    return bool(await asyncio.to_thread(dkim.verify, data, dnsfunc=dnsfunc(dns_server)))


@dataclass
class Signing:
    """A key directory with `s2026.sender.test.pem`, its public key in DNS, and the remote MX
    of dest.test."""

    keys: Path
    key: rsa.RSAPrivateKey
    server: Remote


@pytest.fixture
async def signing(remote: Callable[..., Any], dns: DnsServer, tmp_path: Path) -> Signing:
    keys = tmp_path / "keys"
    key = write_key(keys, "s2026.sender.test.pem")
    publish(dns, "s2026", "sender.test", key)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    return Signing(keys, key, await remote("127.0.0.2"))


def dkim_plugin(keys: Path, **options: Any) -> dict[str, Any]:
    """The DKIM plugin signing mail from sender.test with the selector s2026 (by default)."""
    options = {"selector": "s2026", "domains": {"sender.test": {}}, **options}
    return {
        "name": "dkim",
        "hooks": ["data"],
        "module": "dkim",
        "body_limit": 64 * 1024,
        "timeout": 15,  # generous: RSA in Python on a loaded machine
        "failure_policy": "Fail",
        "options": {"key_directory": str(keys), **options},
    }


async def test_mail_from_a_trusted_client_arrives_signed_and_verifies(
    relay: Callable[..., Any],
    signing: Signing,
    dns: DnsServer,
) -> None:
    keys, server = signing.keys, signing.server
    system = await relay(plugins=[dkim_plugin(keys)])
    queue_id = await send(system, "bounces@sender.test", ["u@dest.test"], MESSAGE)
    entry = await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    arrived = server.arrived[0].data
    received, _, signed = arrived.partition(b"\r\nDKIM-Signature: v=1; a=rsa-sha256;")
    assert received.startswith(b"Received: from client.test")
    assert signed.startswith(b" c=relaxed/relaxed; d=sender.test;")
    assert b" s=s2026;" in signed
    assert await verified(arrived, dns)
    assert entry.metadata == {"dkim.domain": "sender.test", "dkim.selector": "s2026"}
    # A changed body no longer verifies: the signature covers what arrived.
    tampered = arrived.replace(b"covered by", b"changed in")
    assert not await verified(tampered, dns)


async def test_a_subdomain_entry_signs_with_its_own_selector_domain_and_key_file(
    relay: Callable[..., Any],
    signing: Signing,
    dns: DnsServer,
) -> None:
    keys, server = signing.keys, signing.server
    (keys / "corporate.pem").write_bytes((keys / "s2026.sender.test.pem").read_bytes())
    publish(dns, "eu1", "sender.test", signing.key)
    system = await relay(
        plugins=[
            dkim_plugin(
                keys,
                domains={".sender.test": {"selector": "eu1", "key": "corporate.pem"}},
            )
        ]
    )
    message = MESSAGE.replace(b"alice@sender.test", b"alice@mail.Sender.test")
    await send(system, "bounces@sender.test", ["u@dest.test"], message)
    await arrivals(server, 1)
    arrived = server.arrived[0].data
    assert b" d=sender.test;" in arrived
    assert b" s=eu1;" in arrived
    assert await verified(arrived, dns)


async def test_mail_from_a_stranger_is_not_signed_and_an_authenticated_one_is(
    relay: Callable[..., Any],
    signing: Signing,
    dns: DnsServer,
    tls_files: dict[str, Path],
    client_tls: ssl.SSLContext,
) -> None:
    keys, server = signing.keys, signing.server
    # Loopback is not trusted here: the test's client is a stranger unless it authenticates.
    system = await relay(
        trusted_networks=["10.99.0.0/16"],
        relay_domains=["dest.test"],
        plugins=[dkim_plugin(keys)],
        **tls_files,
    )
    stranger = await send(system, "bounces@sender.test", ["u@dest.test"], MESSAGE)
    await settle(system, stranger, "delivered")
    reply = await as_alice(system, client_tls, "bounces@sender.test", ["u@dest.test"], MESSAGE)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    await arrivals(server, 2)
    unsigned, signed = (arrival.data for arrival in server.arrived)
    assert b"DKIM-Signature:" not in unsigned
    assert b"\r\nDKIM-Signature: v=1;" in signed
    assert await verified(signed, dns)


async def test_a_message_over_the_body_limit_goes_on_unsigned(
    relay: Callable[..., Any], signing: Signing
) -> None:
    keys, server = signing.keys, signing.server
    plugin = dkim_plugin(keys) | {"body_limit": 100}
    system = await relay(plugins=[plugin])
    queue_id = await send(system, "bounces@sender.test", ["u@dest.test"], MESSAGE)
    entry = await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    assert b"DKIM-Signature:" not in server.arrived[0].data
    assert entry.metadata == {}


async def test_a_key_file_that_is_not_there_stops_ingress_naming_it(
    start_system: StartSystem, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    plugin = dkim_plugin(tmp_path / "keys", domains={"sender.test": {"key": "gone.pem"}})
    with pytest.raises(errors.ConfigurationError) as raised:
        await start_system(plugins=[plugin])
    assert str(raised.value) == (
        f"EMPATH_PLUGINS: plugin 'dkim': options.domains.sender.test: cannot read "
        f"{tmp_path / 'keys' / 'gone.pem'}: No such file or directory"
    )
