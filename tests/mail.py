"""Mail through a running Empath: MX records to point it at, a message in, and waiting for the
message to reach a state or a remote MX."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from empath.core import queue, settings
from tests.dns_server import DnsServer
from tests.remote import Remote
from tests.system import System
from tests.waiting import eventually

BODY = b"Subject: hello\r\nFrom: a@sender.test\r\n\r\nline one\r\n.leading dot\r\nlast line\r\n"


def mx(dns: DnsServer, domain: str, *hosts: tuple[int, str, str], ttl: int = 300) -> None:
    """MX records for a domain: (preference, host name, address)."""
    dns.add(domain, "MX", *(f"{pref} {name}." for pref, name, _ in hosts), ttl=ttl)
    for _, name, address in hosts:
        dns.add(name, "A", address, ttl=ttl)


def routed(
    make_settings: Callable[..., settings.Settings], dns: DnsServer, mx_port: int, **overrides: Any
) -> settings.Settings:
    """Settings whose delivery finds MX hosts through the test's DNS server, on the test's MX
    port, with no rate limit, and a scheduler that looks five times a second."""
    values: dict[str, Any] = {
        "dns_nameservers": [f"127.0.0.1:{dns.port}"],
        "delivery_port": mx_port,
        "scheduler_interval": 0.2,
        "delivery_rate_per_domain": 0,
    }
    return make_settings(**{**values, **overrides})


async def send(
    system: System, sender: str, recipients: list[str], body: bytes = BODY, **params: str
) -> str:
    """One message over SMTP (RET, ENVID and NOTIFY as given); its queue id."""
    wire = await system.wire()
    await wire.command("EHLO client.test")
    mail = " ".join(f"{k}={v}" for k, v in params.items() if k in {"RET", "ENVID", "BODY"})
    assert (await wire.command(f"MAIL FROM:<{sender}> {mail}".strip())).startswith("250")
    for rcpt in recipients:
        notify = f" NOTIFY={params['NOTIFY']}" if "NOTIFY" in params else ""
        assert (await wire.command(f"RCPT TO:<{rcpt}>{notify}")).startswith("250")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    reply = await wire.reply()
    await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


async def settle(system: System, queue_id: str, *states: str, timeout: float = 20.0) -> queue.Entry:
    """Wait until a message reaches one of `states`."""
    await system.entry(queue_id)
    return await eventually(
        lambda: system.records.get(queue_id),
        until=lambda entry: entry.state in states,
        what=f"{queue_id} to be {' or '.join(states)}",
        timeout=timeout,
    )


async def arrivals(server: Remote, count: int, timeout: float = 20.0) -> None:
    """Wait until `count` messages have arrived at a remote MX."""
    await eventually(
        lambda: len(server.arrived),
        until=lambda n: n >= count,
        what=f"{count} messages at {server.name}",
        timeout=timeout,
    )
