"""In-process validation plugins in real SMTP sessions: refusals with the plugin's own reply,
the order of plugins, and what a plugin that fails does under each failure policy."""

from __future__ import annotations

import base64
import ssl
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from tests.integration.plugins import samples
from tests.system import StartSystem
from tests.wire import Wire

BODY = b"Subject: plugins\r\n\r\nhello\r\n"
SAMPLES = "tests.integration.plugins.samples"


def plugin(name: str, hooks: list[str], **options: Any) -> dict[str, Any]:
    return {"name": name, "hooks": hooks, "module": f"{SAMPLES}:{name}", **options}


@pytest.fixture(autouse=True)
def _calls() -> None:
    samples.CALLS.clear()


async def test_a_plugin_refuses_one_recipient_with_its_reply_and_the_others_are_accepted(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, plugins=[plugin("refuse_nobody", ["rcpt"])])
    wire = await system.wire()
    assert (await wire.command("EHLO client.test")).startswith("250")
    assert (await wire.command("MAIL FROM:<a@sender.test>")).startswith("250")
    assert (await wire.command("RCPT TO:<u@example.com>")) == "250 2.1.5 Recipient OK"
    assert (await wire.command("RCPT TO:<nobody@example.com>")) == "550 5.1.1 nobody lives here"
    assert (await wire.command("RCPT TO:<v@example.com>")) == "250 2.1.5 Recipient OK"
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(BODY + b".\r\n")
    reply = await wire.reply()
    await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    assert [r.address for r in entry.recipients] == ["u@example.com", "v@example.com"]
    assert entry.metadata == {"score": "0.5", "checked.0": "1", "checked.1": "1"}


async def test_plugins_are_asked_by_priority_and_the_first_refusal_wins(
    start_system: StartSystem,
) -> None:
    # By name the order would be first, second, third; by priority it is third, first, second.
    system = await start_system(
        frozen=True,
        plugins=[
            plugin("second", ["mail"], priority=20),
            plugin("first", ["mail"], priority=10),
            plugin("third", ["mail"], priority=5),
            plugin("refuse_nobody", ["mail"], priority=30),
        ],
    )
    wire = await system.wire()
    await wire.command("EHLO client.test")
    reply = await wire.command("MAIL FROM:<a@sender.test>")
    await wire.close()
    assert reply == "451 4.7.0 second after first"
    assert samples.CALLS == [("third", "mail"), ("first", "mail"), ("second", "mail")]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("Ignore", "250 2.1.0 Sender OK"),
        ("Fail", "451 4.7.1 Temporary policy failure, try again later"),
    ],
)
@pytest.mark.parametrize("name", ["slow", "broken"])
async def test_a_plugin_that_times_out_or_raises_follows_its_failure_policy(
    start_system: StartSystem, name: str, policy: str, expected: str
) -> None:
    system = await start_system(
        frozen=True,
        plugins=[plugin(name, ["mail", "rcpt"], timeout=0.5, failure_policy=policy)],
    )
    wire = await system.wire()
    await wire.command("EHLO client.test")
    started = time.monotonic()
    assert await wire.command("MAIL FROM:<a@sender.test>") == expected
    assert time.monotonic() - started < 5  # the timeout, not the plugin, decided
    # The session goes on either way.
    assert (await wire.command("NOOP")).startswith("250")
    if policy == "Ignore":
        assert (await wire.command("RSET")).startswith("250")
        reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY, ehlo=False)
        assert reply.startswith("250 2.0.0 Ok: queued as ")
    await wire.close()
    assert samples.CALLS[0] == (name, "mail")


async def test_a_refusal_at_connect_is_the_only_reply_and_ends_the_session(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, plugins=[plugin("refuse_connect", ["connect"])])
    wire = await Wire.open(system.smtp_port)
    assert wire.greeting == "554 5.7.1 no service for you"
    assert await wire.reader.read() == b""  # closed
    await wire.close()


async def test_a_refusal_at_ehlo_ends_the_session(start_system: StartSystem) -> None:
    system = await start_system(frozen=True, plugins=[plugin("refuse_ehlo", ["ehlo"])])
    wire = await system.wire()
    assert (await wire.command("EHLO client.test")).startswith("250-")
    assert await wire.command("EHLO client.bad") == "550 5.7.1 go away"
    assert await wire.reader.read() == b""
    await wire.close()


async def test_plugins_are_told_of_tls_and_of_the_authenticated_user(
    start_system: StartSystem, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.test", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users").write_text(f"alice:{hashed}\nmallory:{hashed}\n")
    samples.TOLD.clear()
    system = await start_system(
        frozen=True,
        tls_cert_file=tmp_path / "cert.pem",
        tls_key_file=tmp_path / "key.pem",
        auth_credentials_file=tmp_path / "users",
        plugins=[plugin("tls_and_auth", ["starttls", "auth", "mail"])],
    )
    client = ssl.create_default_context()
    ca.configure_trust(client)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.starttls(client)
    await wire.command("EHLO client.test")
    mallory = base64.b64encode(b"\0mallory\0secret").decode()
    assert await wire.command(f"AUTH PLAIN {mallory}") == "535 5.7.8 not you, mallory"
    alice = base64.b64encode(b"\0alice\0secret").decode()
    assert (await wire.command(f"AUTH PLAIN {alice}")).startswith("235")
    reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY, ehlo=False)
    await wire.close()
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    hooks = [(hook, tls, user) for hook, tls, user, _ in samples.TOLD]
    assert hooks == [
        ("starttls", "TLSv1.3", None),
        ("auth", "TLSv1.3", "mallory"),
        ("auth", "TLSv1.3", "alice"),
        ("mail", "TLSv1.3", "alice"),
    ]
    assert samples.TOLD[0][3] == {}
    cipher = samples.TOLD[1][3]  # what the plugin set at starttls, shown at the next hooks
    assert set(cipher) == {"tls.cipher"}
    assert entry.metadata == cipher  # set at starttls, kept with the message
    assert entry.client.authenticated_as == "alice"
