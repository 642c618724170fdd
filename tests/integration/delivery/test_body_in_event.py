"""A small message's body lives in its `received` event until it has to wait.

Ingress does not store a body under `EMPATH_INLINE_BODY_LIMIT` in the bucket: JetStream keeps the
event that carries it. A message delivered at its first attempt never touches the bucket; one
that has to wait (deferred, or an attempt that never reports back) is stored there before its
record says it waits, and later attempts, DSNs and `queue show` find it wherever it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from empath.core import bodies, errors, names, queue
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx, send, settle
from tests.system import StartSystem, System
from tests.waiting import eventually

READY = "every spool reads bodies from their events"
NOT_READY = "a spool that does not read bodies from their events is running"


@pytest.fixture(autouse=True)
def _told(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="empath.core.bodies")


async def in_events(caplog: pytest.LogCaptureFixture, line: str = READY, count: int = 1) -> None:
    """Wait until ingress has said it leaves small bodies out of the bucket (or, with
    `NOT_READY`, that it stores them all again), `count` times in all."""
    await eventually(
        lambda: [m for m in caplog.messages if m.startswith(line)],
        until=lambda said: len(said) >= count,
        what=f"ingress to say {line!r}",
    )


async def test_a_small_message_delivered_at_once_is_never_in_the_bucket(
    relay: Callable[..., Any],
    remote: Callable[..., Any],
    dns: DnsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await remote("127.0.0.2", hold=asyncio.Event())
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    system = await relay()
    await in_events(caplog)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    await eventually(lambda: server.in_data, until=lambda n: n == 1, what="delivery under way")
    out = await system.entry(queue_id)
    # While its only attempt is out, the record names the event that carries the body, and
    # the bucket holds nothing.
    assert (out.state, out.body_seq is not None) == (queue.State.DELIVERING, True)
    assert await system.bodies() == []

    server.hold.set()
    delivered = await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    assert server.arrived[0].data.endswith(BODY)
    assert delivered.body_seq == out.body_seq
    assert await system.bodies() == []


async def test_a_small_message_that_must_wait_is_stored_and_its_retry_sends_those_bytes(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", rcpt_reply="451 4.3.0 Greylisted, try later")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    system = await relay(retry_schedule=[0, 2])
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])

    deferred = await settle(system, queue_id, "deferred")
    assert deferred.body_seq is None  # in the bucket now: the record says so
    stored = await system.objects.get(deferred.body_key)
    assert stored.startswith(b"Received: from client.test")
    assert stored.endswith(BODY)

    server.rcpt_reply = None
    await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    assert server.arrived[0].data == stored
    await eventually(system.bodies, until=lambda keys: keys == [], what="the body removed")


async def test_an_attempt_that_never_reports_back_stores_the_body_before_it_waits(
    start_system: StartSystem, caplog: pytest.LogCaptureFixture
) -> None:
    # No delivery service: the first attempt's job is published and nobody takes it.
    system = await start_system(
        only=("ingress", "spool"),
        delivering_timeout=1.0,
        retry_schedule=[0, 3600],
        scheduler_interval=0.2,
    )
    await in_events(caplog)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    out = await system.entry(queue_id)
    assert out.body_seq is not None
    assert await system.bodies() == []

    waiting = await settle(system, queue_id, "deferred")
    assert waiting.body_seq is None
    assert waiting.last_reply == "451 4.4.0 Attempt timed out without a result"
    assert (await system.objects.get(waiting.body_key)).endswith(BODY)


@pytest.fixture
async def out(
    start_system: StartSystem, caplog: pytest.LogCaptureFixture
) -> tuple[System, queue.Entry]:
    """A small message out on its first attempt (no delivery service takes it)."""
    system = await start_system(only=("ingress", "spool"))
    await in_events(caplog)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "delivering")
    assert entry.body_seq is not None
    return system, entry


async def test_a_body_is_read_from_the_event_that_carries_it(
    out: tuple[System, queue.Entry],
) -> None:
    system, entry = out
    found = bodies.Bodies(objects=system.objects, js=system.bus.js)
    whole = await found.get(entry)
    assert whole.startswith(b"Received: from client.test")
    assert whole.endswith(BODY)
    assert await found.get(entry, limit=9) == b"Received:"
    assert entry.size == len(whole)


async def test_an_event_that_is_not_the_messages_own_yields_no_body(
    out: tuple[System, queue.Entry],
) -> None:
    """A record naming another message's event (or none) never gets that message's body."""
    system, entry = out
    other = await send(system, "b@sender.test", ["v@dest.test"])
    theirs = await settle(system, other, "delivering")
    found = bodies.Bodies(objects=system.objects, js=system.bus.js)
    with pytest.raises(errors.NotFound, match="does not carry its body"):
        await found.get(entry.model_copy(update={"body_seq": theirs.body_seq}))
    with pytest.raises(errors.NotFound, match="no event at sequence"):
        await found.get(entry.model_copy(update={"body_seq": 10_000}))
    # Keeping a body that is gone leaves the record as it is (and the bucket empty).
    lost = entry.model_copy(update={"body_seq": 10_000})
    assert await found.keep(lost) is lost
    assert await system.bodies() == []


async def test_while_a_spool_that_cannot_read_events_runs_every_body_is_stored(
    start_system: StartSystem, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: a spool of an earlier version (its heartbeat names no feature) would
    look for a body in the bucket, so ingress stores every one while such a spool beats."""
    system = await start_system(only=("ingress", "spool"))
    await in_events(caplog)
    beats = await system.bus.key_value(names.SERVICES_BUCKET)
    old = json.dumps({"service": "spool", "instance": "old", "started": 0}).encode()
    await beats.put("spool.old", old)
    await in_events(caplog, NOT_READY)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    stored = await settle(system, queue_id, "delivering")
    assert stored.body_seq is None
    assert (await system.objects.get(stored.body_key)).endswith(BODY)

    # Gone (or cut off from NATS, its entry expired): ingress goes on storing for a
    # heartbeat's lifetime and a beat (`bodies.SpoolsReady`, unit-tested with a clock).
    await beats.purge("spool.old")
    queue_id = await send(system, "b@sender.test", ["v@dest.test"])
    still = await settle(system, queue_id, "delivering")
    assert still.body_seq is None
    assert (await system.objects.get(still.body_key)).endswith(BODY)
