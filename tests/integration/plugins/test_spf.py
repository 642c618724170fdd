"""The SPF plugin that ships (`"module": "spf"`) in a real ingress, spool and delivery, asking
the tests' DNS server (`EMPATH_DNS_NAMESERVERS`, as delivery does): the result reaches the
remote MX as `Authentication-Results`, and with its options a `fail` is refused and a
`temperror` deferred at MAIL."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from empath.core import plugins, settings
from empath.ingress import transports
from empath.ingress.builtin import spf_check
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
from tests.remote import Remote
from tests.system import System
from tests.tls_auth import as_alice

MESSAGE = b"From: someone@example.org\r\nSubject: spf\r\n\r\nhello\r\n"


def spf_plugin(**options: Any) -> dict[str, Any]:
    return {"name": "spf", "hooks": ["mail", "data"], "module": "spf", "options": options}


@pytest.fixture
def records(dns: DnsServer) -> DnsServer:
    """SPF records of sender domains (the test's client is 127.0.0.1), and the MX of dest.test."""
    dns.add("pass.test", "TXT", '"v=spf1 a:out.pass.test -all"')
    dns.add("out.pass.test", "A", "127.0.0.1")
    dns.add("fail.test", "TXT", '"v=spf1 ip4:192.0.2.0/24 -all"')
    dns.add("soft.test", "TXT", '"v=spf1 ip4:192.0.2.1 ~all"')
    dns.add("none.test", "A", "192.0.2.9")  # a domain without any SPF record
    dns.add("client.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')  # the HELO name
    dns.servfail.add("broken.test")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    return dns


@pytest.fixture
def stranger(relay: Callable[..., Any], records: DnsServer) -> Callable[..., Any]:
    """A relay for dest.test that does not trust loopback: the test's client is a stranger."""

    async def start(**overrides: Any) -> System:
        return await relay(  # type: ignore[no-any-return]
            trusted_networks=["10.99.0.0/16"], relay_domains=["dest.test"], **overrides
        )

    return start


async def test_each_result_reaches_the_remote_mx_as_authentication_results(
    stranger: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    server: Remote = await remote("127.0.0.2")
    system = await stranger(plugins=[spf_plugin()])
    expected = {
        "a@pass.test": b"spf=pass smtp.mailfrom=a@pass.test",
        "a@fail.test": b"spf=fail smtp.mailfrom=a@fail.test",
        "a@soft.test": b"spf=softfail smtp.mailfrom=a@soft.test",
        "a@none.test": b"spf=none smtp.mailfrom=a@none.test",
        "a@broken.test": b"spf=temperror smtp.mailfrom=a@broken.test",
        "": b"spf=pass smtp.helo=client.test",  # the null sender: the HELO name is checked
    }
    ids = {sender: await send(system, sender, ["u@dest.test"], MESSAGE) for sender in expected}
    await arrivals(server, len(expected))
    arrived = {arrival.sender.strip("<>"): arrival.data for arrival in server.arrived}
    for sender, result in expected.items():
        received, _, rest = arrived[sender].partition(
            b"\r\nAuthentication-Results: mx.test; " + result + b"\r\n"
        )
        assert received.startswith(b"Received: from client.test"), (sender, arrived[sender])
        assert rest == MESSAGE, sender
    entry = await settle(system, ids["a@pass.test"], "delivered")
    assert entry.metadata == {"spf.result": "pass", "spf.smtp.mailfrom": "a@pass.test"}


async def test_with_its_options_a_fail_is_refused_and_a_temperror_deferred(
    stranger: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    server: Remote = await remote("127.0.0.2")
    system = await stranger(plugins=[spf_plugin(refuse_on_fail=True, defer_on_temperror=True)])
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("MAIL FROM:<a@fail.test>") == "550 5.7.23 SPF validation failed"
    assert await wire.command("MAIL FROM:<a@broken.test>") == (
        "451 4.7.24 SPF validation error (DNS), try again later"
    )
    # softfail and none are not fail: the mail goes on, marked.
    for sender in ("a@soft.test", "a@none.test"):
        assert (await wire.command(f"MAIL FROM:<{sender}>")).startswith("250"), sender
        assert (await wire.command("RSET")).startswith("250")
    reply = await wire.transaction("a@pass.test", ["u@dest.test"], MESSAGE, ehlo=False)
    await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    await arrivals(server, 1)
    assert b"\r\nAuthentication-Results: mx.test; spf=pass smtp.mailfrom=a@pass.test\r\n" in (
        server.arrived[0].data
    )


async def test_trusted_and_authenticated_clients_are_not_checked(
    relay: Callable[..., Any],
    stranger: Callable[..., Any],
    remote: Callable[..., Any],
    tls_files: dict[str, Path],
    client_tls: ssl.SSLContext,
) -> None:
    server: Remote = await remote("127.0.0.2")
    refusing = spf_plugin(refuse_on_fail=True)
    # Loopback trusted (the default): the sender's SPF says fail, the mail goes out unmarked.
    trusted = await relay(plugins=[refusing])
    await settle(trusted, await send(trusted, "a@fail.test", ["u@dest.test"], MESSAGE), "delivered")
    await trusted.stop()
    # A stranger that authenticates is not checked either.
    system = await stranger(plugins=[refusing], **tls_files)
    reply = await as_alice(system, client_tls, "a@fail.test", ["u@dest.test"], MESSAGE)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    await arrivals(server, 2)
    for arrival in server.arrived:
        assert b"Authentication-Results:" not in arrival.data


async def test_a_dns_server_that_never_answers_is_a_temperror_within_the_time_limit() -> None:
    class Silent(asyncio.DatagramProtocol):
        pass  # takes every query, answers none

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    config = settings.Plugin(**spf_plugin(time_limit=1, defer_on_temperror=True) | {"timeout": 3})
    served = settings.load(environment=False, dns_nameservers=[f"127.0.0.1:{port}"], dns_timeout=5)
    check = transports.load_in_process(config, served)
    session = plugins.Session(id="s1", client_ip="192.0.2.1", helo="client.test")
    started = time.monotonic()
    try:
        verdict = await check(plugins.MailRequest(session=session, sender="a@slow.test"))
    finally:
        transport.close()
        await check.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2.5  # before the plugin's own timeout
    assert verdict is not None
    assert verdict.reply == spf_check.DNS_ERROR
    assert verdict.metadata == {"spf.result": "temperror", "spf.smtp.mailfrom": "a@slow.test"}
