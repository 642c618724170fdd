"""250 only when the message is safe; 451 and nothing kept when a dependency is down.

A proxy sits between the services and the real NATS or SeaweedFS server; cutting it is the
outage, restoring it the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from empath.core import names, store
from tests import servers
from tests.servers import Proxy
from tests.system import StartSystem, System
from tests.waiting import eventually
from tests.wire import Wire

MESSAGE = b"Subject: durable\r\n\r\nbody\r\n"


@pytest.fixture
async def nats_proxy(nats_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(urlsplit(nats_url).port or 4222)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def s3_proxy(s3_endpoint: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(urlsplit(s3_endpoint).port or 8333)
    await proxy.start()
    yield proxy
    await proxy.close()


async def send(wire: Wire) -> str:
    await wire.command("MAIL FROM:<a@example.org>")
    await wire.command("RCPT TO:<u@example.com>")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(MESSAGE + b".\r\n")
    return await wire.reply()


async def send_until_queued(system: System, timeout: float = 20.0) -> str:
    """After an outage: retry as an SMTP client would, until the message is queued."""

    async def attempt() -> str:
        wire = await system.wire()
        await wire.command("EHLO client.test")
        reply = await send(wire)
        await wire.close()
        assert reply.startswith(("250 ", "451 4.3.0 ")), reply
        return reply

    return await eventually(
        attempt,
        until=lambda reply: reply.startswith("250 "),
        what="the message to be queued after the outage",
        timeout=timeout,
        interval=0.3,
    )


async def test_nats_down_gives_451_keeps_nothing_and_recovers(
    start_system: StartSystem, nats_proxy: Proxy
) -> None:
    system = await start_system(nats_url=f"nats://127.0.0.1:{nats_proxy.port}", frozen=True)
    wire = await system.wire()
    await wire.command("EHLO client.test")
    first = await send(wire)
    assert first.startswith("250 2.0.0 Ok: queued as ")
    await system.entry(first.rsplit(" ", 1)[1])

    await nats_proxy.cut()
    reply = await send(wire)
    assert reply == "451 4.3.0 Temporary failure queueing the message, try again later"
    assert await wire.command("NOOP") == "250 2.0.0 OK"  # the session stays usable
    await wire.close()
    assert len(await system.bodies()) == 1
    assert [e.id for e in await system.entries()] == [first.rsplit(" ", 1)[1]]

    await nats_proxy.restore()
    second = await send_until_queued(system)
    entry = await system.entry(second.rsplit(" ", 1)[1])
    assert entry.state == "queued"
    assert len(await system.entries()) == 2
    assert len(await system.bodies()) == 2


async def test_object_store_down_gives_451_keeps_nothing_and_recovers(
    start_system: StartSystem, s3_proxy: Proxy
) -> None:
    # Every body goes to the bucket before the 250 (a small one would not need it).
    system = await start_system(
        s3_endpoint=f"http://127.0.0.1:{s3_proxy.port}", frozen=True, inline_body_limit=0
    )
    wire = await system.wire()
    await wire.command("EHLO client.test")
    first = await send(wire)
    assert first.startswith("250 ")
    await system.entry(first.rsplit(" ", 1)[1])

    await s3_proxy.cut()
    reply = await send(wire)
    assert reply.startswith("451 4.3.0 ")
    assert await wire.command("NOOP") == "250 2.0.0 OK"
    await wire.close()
    # Had the refused message been announced, the spool would have it once it took in every
    # `received` event there is.
    await system.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
    assert len(await system.entries()) == 1
    assert len(await system.bodies()) == 1

    await s3_proxy.restore()
    second = await send_until_queued(system)
    await system.entry(second.rsplit(" ", 1)[1])
    assert len(await system.bodies()) == 2


async def test_ingress_waits_for_its_dependencies_at_start(
    start_system: StartSystem, nats_proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    await nats_proxy.cut()
    url = f"nats://127.0.0.1:{nats_proxy.port}"
    caplog.set_level(logging.DEBUG, logger="empath.core.bus")
    starting = asyncio.create_task(start_system(nats_url=url, frozen=True))

    def refused() -> list[str]:
        refusal = f"Connect call failed ('127.0.0.1', {nats_proxy.port})"
        return [m for m in caplog.messages if m.startswith("NATS: ") and refusal in m]

    # The services tried, were refused, and tried again: they wait rather than give up.
    await eventually(refused, until=lambda seen: len(seen) >= 4, what="NATS refusing the services")
    assert not starting.done()
    await nats_proxy.restore()
    system = await asyncio.wait_for(starting, 30)
    assert (await send_until_queued(system)).startswith("250 ")


async def test_a_nats_that_does_not_answer_gives_451_within_the_publish_timeout(
    start_system: StartSystem, tmp_path: Path
) -> None:
    """EMPATH_PUBLISH_TIMEOUT: the connection stays up but JetStream never acks (the server
    is paused); the client hears 451 about that long after its final dot, and no body stays."""
    with servers.nats_process(tmp_path / "paused-nats") as (url, nats_server):
        own = {"nats_url": url}
        # A stored body, so there is one to remove (a small message's event is its only copy).
        system = await start_system(
            publish_timeout=1.0, frozen=True, inline_body_limit=0, direct=own, **own
        )
        wire = await system.wire()
        await wire.command("EHLO client.test")
        await wire.command("MAIL FROM:<a@example.org>")
        await wire.command("RCPT TO:<u@example.com>")
        assert (await wire.command("DATA")).startswith("354")
        nats_server.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            await wire.send(MESSAGE + b".\r\n")
            reply = await wire.reply()
            waited = time.monotonic() - started
            assert reply == "451 4.3.0 Temporary failure queueing the message, try again later"
            assert 0.9 <= waited < 5, waited
            assert await system.bodies() == []
        finally:
            nats_server.send_signal(signal.SIGCONT)
        # The publish the server never answered may still land once it runs again: then the
        # spool records it, and its first attempt finds the body gone and ingress's marker
        # saying the message is void, and drops it (test_spool_faults).
        await system.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
        markers = await system.objects.keys(store.VOID_PREFIX)
        assert len(markers) == 1
        assert all(store.void_key(e.body_key) in markers for e in await system.entries())
        assert (await send(wire)).startswith("250 2.0.0 Ok: queued as ")
        await wire.close()
        await system.stop()
