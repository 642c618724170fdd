"""TLS and AUTH for tests of ingress: a CA (trustme), ingress's certificate and an AUTH user
`alice` (`tls_files`, settings to start a system with), a client that trusts the CA
(`client_tls`), and a session that has started TLS (`tls_wire`). A conftest or test module
imports the fixtures it wants."""

from __future__ import annotations

import ssl
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import trustme

from tests.system import System
from tests.wire import Wire

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> Iterator[dict[str, Path]]:
    cert = ca.issue_cert("mx.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    credentials = tmp_path / "credentials"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    credentials.write_text(f"# users\nalice:{hashed}\n")
    return {
        "tls_cert_file": cert_file,
        "tls_key_file": key_file,
        "auth_credentials_file": credentials,
    }


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def plain(user: str, password: str) -> str:
    return b64encode(f"\0{user}\0{password}".encode()).decode()


async def tls_wire(system: System, client_tls: ssl.SSLContext) -> Wire:
    """A session that said EHLO, started TLS and said EHLO again."""
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.starttls(client_tls)
    await wire.command("EHLO client.test")
    return wire


async def as_alice(
    system: System, client_tls: ssl.SSLContext, sender: str, recipients: list[str], body: bytes
) -> str:
    """One transaction over TLS, authenticated as `alice`: the reply to its final dot."""
    wire = await tls_wire(system, client_tls)
    assert (await wire.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).startswith("235")
    reply = await wire.transaction(sender, recipients, body, ehlo=False)
    await wire.close()
    return reply
