"""The queue over time, as the README promises it: a maximum lifetime, finished records purged
after the retention, an attempt that never reported tried again, and one attempt per due
message however many spool replicas look at the queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from empath.core import errors, names
from empath.spool import controls
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
from tests.system import System
from tests.waiting import eventually


async def gone(system: System, queue_id: str, *, timeout: float = 10.0) -> datetime:
    """Wait until a message's record is removed from the queue; when it was seen gone."""

    async def missing() -> bool:
        try:
            await system.records.get(queue_id)
        except errors.NotFound:
            return True
        return False

    await eventually(missing, what=f"the record of {queue_id} to be removed", timeout=timeout)
    return datetime.now(UTC)


async def test_a_message_older_than_the_maximum_lifetime_fails_and_is_bounced(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", rcpt_reply="450 4.2.1 Mailbox busy")
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay(retry_schedule=[0, 0.5], max_queue_lifetime=2.0, max_attempts=25)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "failed")
    assert 2 <= entry.attempts < 25  # it was the age, not the attempts, that ended it
    assert entry.recipients[0].last_reply == "450 4.2.1 Mailbox busy (too long in the queue)"
    # Given up at the first outcome past the lifetime: the one before came in younger.
    assert entry.updated_at is not None
    failed_at = (entry.updated_at - entry.received_at).total_seconds()
    before = (entry.history[-2].finished_at - entry.received_at).total_seconds()
    assert failed_at >= 2.0 > before
    await arrivals(sender_mx, 1)
    bounce = sender_mx.arrived[0].data
    assert b"Action: failed" in bounce
    assert b"Status: 4.4.7" in bounce
    assert b"Final-Recipient: rfc822; u@dest.test" in bounce


async def test_finished_records_are_purged_after_the_retention_and_open_ones_are_kept(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", refuse={"gone@dest.test": "550 5.1.1 Gone"})
    await remote("127.0.0.3", rcpt_reply="451 4.3.0 Later")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "later.test", (10, "mx.later.test", "127.0.0.3"))
    system = await relay(finished_retention=2.0, retry_schedule=[0, 3600])
    delivered = await settle(system, await send(system, "", ["u@dest.test"]), "delivered")
    failed = await settle(system, await send(system, "", ["gone@dest.test"]), "failed")
    deferred = await settle(system, await send(system, "", ["u@later.test"]), "deferred")
    for finished in (delivered, failed):
        assert finished.updated_at is not None
        seen_gone = await gone(system, finished.id)
        assert (seen_gone - finished.updated_at).total_seconds() >= 2.0
    # The purge that took them looked at the deferred message too, and kept it.
    assert [e.id for e in await system.entries()] == [deferred.id]
    assert (await system.records.get(deferred.id)).state == "deferred"


async def test_an_attempt_that_never_reports_is_tried_again_after_the_delivering_timeout(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(only=("ingress", "spool"), delivering_timeout=2.0)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    dispatched = await settle(system, queue_id, "delivering")
    assert dispatched.attempts == 1
    # Its job is lost with the worker that had it: nothing will ever report attempt 1.
    await system.bus.js.purge_stream(names.JOBS_STREAM.name)
    delivery = await relay(only=("delivery",), delivering_timeout=2.0)
    requeued = await settle(system, queue_id, "deferred")
    assert requeued.last_reply == "451 4.4.0 Attempt timed out without a result"
    assert (requeued.attempts, requeued.history) == (1, ())
    assert requeued.updated_at is not None
    assert dispatched.updated_at is not None
    assert (requeued.updated_at - dispatched.updated_at).total_seconds() >= 2.0
    entry = await settle(system, queue_id, "delivered")
    assert [h.attempt for h in entry.history] == [2]  # tried again, as attempt 2
    assert len(server.arrived) == 1
    await delivery.stop()


async def test_two_spool_replicas_dispatch_each_due_message_once(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    common: dict[str, Any] = {
        "scheduler_interval": 0.05,  # both look often, so they race for every message
        "retry_schedule": [0, 3600],
    }
    system = await relay(frozen=True, **common)
    second = await relay(only=("spool",), **common)
    sent = [await send(system, "a@sender.test", [f"u{n}@dest.test"]) for n in range(20)]
    await asyncio.gather(*(system.entry(queue_id) for queue_id in sent))
    # Unfrozen at once, every message is due for both schedulers at the same moment.
    await controls.unfreeze(await system.bus.key_value(names.FLAGS_BUCKET))
    entries = [await settle(system, queue_id, "delivered") for queue_id in sent]
    assert [(e.attempts, [h.attempt for h in e.history]) for e in entries] == [(1, [1])] * 20
    jobs = await system.bus.js.stream_info(names.JOBS_STREAM.name)
    assert jobs.state.last_seq == 20  # one job published per message
    assert sorted(r for a in server.arrived for r in a.recipients) == sorted(
        f"u{n}@dest.test" for n in range(20)
    )
    await second.stop()
