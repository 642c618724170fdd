"""The spool under faults: a spool dying mid-dispatch, a lost body, a NATS restart.

Each test brings the queue into the state a fault leaves (a record claimed with no job out,
a body gone from the bucket, a restarted NATS server) and checks what a user would: the mail
arrives once, the sender gets a bounce, a new message goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from empath.core import errors, events, flags, ids, names, queue, store
from empath.spool import intake, removals, scheduler
from tests import servers
from tests.dns_server import DnsServer
from tests.remote import Remote
from tests.system import StartSystem, System
from tests.waiting import eventually
from tests.wire import Wire

BODY = b"Subject: faults\r\nFrom: a@sender.test\r\n\r\nthe secret plan\r\n"


@pytest.fixture
async def mx(dns: DnsServer) -> AsyncIterator[Remote]:
    """One remote MX for the domains dest.test and sender.test."""
    server = Remote(name="mx.dest.test", host="127.0.0.2", port=servers.free_port())
    await server.start()
    for domain in ("dest.test", "sender.test"):
        dns.add(domain, "MX", f"10 mx.{domain}.")
        dns.add(f"mx.{domain}", "A", "127.0.0.2")
    yield server
    await server.close()


@pytest.fixture
def relay(start_system: StartSystem, dns: DnsServer, mx: Remote) -> Callable[..., Any]:
    async def start(**overrides: Any) -> System:
        values: dict[str, Any] = {
            "only": ("ingress", "spool", "delivery"),
            "dns_nameservers": [f"127.0.0.1:{dns.port}"],
            "delivery_port": mx.port,
            "relay_domains": ["dest.test"],
            "retry_schedule": [0, 1],
            "scheduler_interval": 0.2,
            "delivery_rate_per_domain": 0,
            "frozen": True,
        }
        values.update(overrides)
        return await start_system(**values)

    return start


async def send(system: System) -> str:
    wire = await system.wire()
    reply = await wire.transaction("a@sender.test", ["u@dest.test"], BODY)
    await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


async def claim_as_a_dying_spool(system: System, queue_id: str) -> queue.Entry:
    """Claim the message for its next attempt exactly as the scheduler does, and publish no
    job: what a spool killed between the two steps leaves behind."""
    due = (await system.entry(queue_id)).next_attempt
    assert due is not None
    written = await system.records.update(queue_id, lambda current: scheduler.claimed(current, due))
    assert written is not None
    return written.after


async def jobs(system: System) -> list[events.DeliveryJob]:
    """The delivery jobs waiting in the stream."""
    info = await system.bus.js.stream_info(names.JOBS_STREAM.name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await system.bus.js.get_msg(names.JOBS_STREAM.name, seq)
        assert msg.data is not None
        found.append(events.decode(msg.data, events.DeliveryJob))
    return found


async def unfreeze(system: System) -> None:
    await flags.set_frozen(await system.bus.key_value(names.FLAGS_BUCKET), False)


async def test_a_job_claimed_by_a_spool_that_died_before_publishing_is_delivered_in_seconds(
    relay: Callable[..., Any], mx: Remote
) -> None:
    system = await relay()
    queue_id = await send(system)
    await claim_as_a_dying_spool(system, queue_id)
    await unfreeze(system)

    async def delivered() -> bool:
        entry = await system.records.get(queue_id)
        return entry.state == queue.State.DELIVERED

    await eventually(delivered, timeout=scheduler.LEASE_SECONDS + 10, what="delivered")
    assert [(a.sender, a.recipients) for a in mx.arrived] == [("a@sender.test", ["u@dest.test"])]
    assert b"the secret plan" in mx.arrived[0].data
    entry = await system.records.get(queue_id)
    assert entry.attempts == 1
    assert [past.attempt for past in entry.history] == [1]


async def test_two_spools_publish_each_unconfirmed_job_once_even_when_it_did_arrive(
    start_system: StartSystem,
) -> None:
    system = await start_system(frozen=True, relay_domains=["dest.test"])
    await start_system(only=("spool",), scheduler_interval=0.2)
    queued = [await send(system) for _ in range(4)]
    claims = [await claim_as_a_dying_spool(system, queue_id) for queue_id in queued]
    # The first two spools died after their publish arrived, the others before.
    for claim in claims[:2]:
        await system.bus.publish(
            names.JOBS_SUBJECT, scheduler.job_for(claim), msg_id=f"{claim.id}.{claim.attempts}"
        )

    async def all_confirmed() -> bool:
        entries = [await system.records.get(queue_id) for queue_id in queued]
        return all(e.state == queue.State.DELIVERING and e.lease_until is None for e in entries)

    await eventually(all_confirmed, timeout=scheduler.LEASE_SECONDS + 10, what="jobs confirmed")
    found = await jobs(system)
    assert sorted((job.id, job.attempt) for job in found) == sorted((q, 1) for q in queued)
    assert all([r.address for r in job.envelope.recipients] == ["u@dest.test"] for job in found)


async def test_a_message_ingress_voided_is_dropped_at_its_first_attempt_without_a_bounce(
    relay: Callable[..., Any], mx: Remote
) -> None:
    # As ingress leaves it when it answered 451 and the event reached JetStream all the same
    # (its acknowledgement lost): the body removed, and a marker saying why.
    system = await relay()
    queue_id = await send(system)
    entry = await system.entry(queue_id)
    marker = store.void_key(entry.body_key)
    await system.objects.put(marker, b"")
    await system.objects.delete(entry.body_key)
    await unfreeze(system)

    async def dropped() -> bool:
        try:
            await system.records.get(queue_id)
        except errors.NotFound:
            return True
        return False

    await eventually(dropped, timeout=20, what="the void message to be dropped")
    await eventually(
        lambda: system.objects.exists(marker),
        until=lambda there: not there,
        what="the marker to be removed",
    )
    assert mx.arrived == []  # neither the message nor a bounce


async def test_a_message_whose_body_is_lost_bounces_with_a_dsn_that_says_so(
    relay: Callable[..., Any], mx: Remote
) -> None:
    system = await relay()
    queue_id = await send(system)
    entry = await system.entry(queue_id)
    await system.objects.delete(entry.body_key)
    await unfreeze(system)

    async def finished() -> bool:
        return (await system.records.get(queue_id)).finished

    await eventually(finished, timeout=20, what="the message finished")
    entry = await system.records.get(queue_id)
    assert entry.state == queue.State.FAILED
    assert entry.recipients[0].last_reply == "554 5.3.0 The message body is missing from the spool"

    async def bounced() -> bool:
        return any(a.recipients == ["a@sender.test"] for a in mx.arrived)

    await eventually(bounced, timeout=20, what="the bounce arrived")
    [bounce] = mx.arrived
    assert bounce.sender == "<>"
    assert b"Status: 5.3.0" in bounce.data
    assert b"554 5.3.0 The message body is missing from the spool" in bounce.data
    assert b"its stored copy was lost" in bounce.data
    assert b"the secret plan" not in bounce.data


async def test_after_a_nats_restart_a_new_message_is_dispatched_within_seconds(
    start_system: StartSystem, restartable_nats: servers.RestartableNats
) -> None:
    system = await start_system(
        nats_url=restartable_nats.url,
        direct={"nats_url": restartable_nats.url},
        relay_domains=["dest.test"],
        scheduler_interval=0.2,
    )

    async def dispatched(queue_id: str) -> bool:
        return (await system.records.get(queue_id)).state == queue.State.DELIVERING

    # Not yet: the record is not written, or the test's own connection is still reconnecting.
    not_yet = (errors.NotFound, errors.BusUnavailable)
    first = await send(system)
    await eventually(
        lambda: dispatched(first),
        timeout=10,
        what="dispatched before the restart",
        ignoring=not_yet,
    )

    restartable_nats.stop()
    restartable_nats.start()
    second = await send_until_queued(system)

    started = asyncio.get_running_loop().time()
    await eventually(
        lambda: dispatched(second),
        timeout=10,
        what="dispatched after the restart",
        ignoring=not_yet,
    )
    took = asyncio.get_running_loop().time() - started
    assert took < 2.5, f"dispatched only after {took:.1f}s"


async def send_until_queued(system: System, timeout: float = 20.0) -> str:
    """After the restart: retry as an SMTP client would (on 451 only), until it is queued."""

    async def attempt() -> str:
        wire = await Wire.open(system.smtp_port)
        try:
            reply = await wire.transaction("a@sender.test", ["u@dest.test"], BODY)
        finally:
            await wire.close()
        assert reply.startswith(("250 ", "451 4.3.0 ")), reply
        return reply

    reply = await eventually(
        attempt, until=lambda reply: reply.startswith("250 "), what="queued", timeout=timeout
    )
    return reply.rsplit(" ", 1)[1]


async def test_every_event_the_spool_drops_is_logged_with_its_queue_id_repeats_at_info(
    start_system: StartSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="empath.spool")
    system = await start_system(frozen=True, relay_domains=["dest.test"])
    queue_id = await send(system)
    entry = await system.entry(queue_id)
    received = events.Received(
        id=queue_id,
        body_key=entry.body_key,
        size=entry.size,
        received_at=entry.received_at,
        envelope=entry.envelope(),
        client=entry.client,
    )
    outcome = events.Attempted(
        id=queue_id,
        attempt=1,
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        worker="test",
        results=(events.RecipientResult(address="u@dest.test", outcome="delivered", reply="250"),),
    )
    unknown = outcome.model_copy(update={"id": "01KJP5Z4M0ABCDEFGHJKMNPQRS"})
    # A repeated `received`, an outcome for a message not in the queue, and an outcome for a
    # message never dispatched (the queue is frozen): forged, or left over, it is refused.
    await system.bus.publish(names.RECEIVED_SUBJECT, received, msg_id="again")
    await system.bus.publish(names.ATTEMPTED_SUBJECT, unknown, msg_id="unknown")
    await system.bus.publish(names.ATTEMPTED_SUBJECT, outcome, msg_id="forged")

    def logged(queue_id: str, text: str, level: int) -> bool:
        return any(
            r.levelno == level
            and getattr(r, "queue_id", None) == queue_id
            and text in r.getMessage()
            for r in caplog.records
        )

    # Repeats are routine with at-least-once delivery: INFO. A refusal is a WARNING.
    async def all_logged() -> bool:
        return (
            logged(queue_id, "already recorded: dropping the repeated received event", logging.INFO)
            and logged(unknown.id, "no longer queued", logging.WARNING)
            and logged(
                queue_id,
                "outcome of attempt 1 refused: the message is queued at attempt 0",
                logging.WARNING,
            )
        )

    await eventually(all_logged, timeout=10, what="a line for each dropped event")
    assert not any(
        r.levelno >= logging.WARNING
        and getattr(r, "queue_id", None) == queue_id
        and "received" in r.getMessage()
        for r in caplog.records
    ), "a repeated event was logged as a warning"
    still = await system.records.get(queue_id)
    assert (still.state, still.history) == ("queued", ()), "a forged outcome changed the record"


async def test_the_audit_removes_bodies_no_record_names_and_nothing_else(
    relay: Callable[..., Any],
) -> None:
    """As a `kill -9` of ingress between storing a body and publishing its event leaves it:
    a body nobody will ever deliver. The audit removes it once it is a day old, and keeps
    every body a record names, however old, and anything in the bucket that is not ours."""
    system = await relay()
    now = datetime.now(UTC)
    live = await system.entry(await send(system))
    # A message received three days ago, still waiting: its body is old and needed.
    waiting_id = ids.new_id()
    waiting = live.model_copy(
        update={"id": waiting_id, "body_key": store.body_key(waiting_id, now - timedelta(days=3))}
    )
    assert await system.records.create(waiting)
    orphan = store.body_key(ids.new_id(), now - timedelta(days=3))
    young = store.body_key(ids.new_id(), now - timedelta(hours=2))
    foreign = f"{store.day_prefix(now - timedelta(days=3))}notes.txt"
    for key in (waiting.body_key, orphan, young, foreign):
        await system.objects.put(key, BODY)
    bodies = removals.Removals(system.objects)

    async def audit(caught_up: bool) -> list[str]:
        async def intake_state() -> bool:
            # Ask as the spool does; a test stands in for a backlog with False.
            return caught_up and await intake.caught_up(system.bus)

        return await bodies.audit(
            now,
            oldest=now - timedelta(days=7),
            caught_up=intake_state,
            recorded=system.records.exists,
        )

    # With events still to take, one of them may name any body: nothing is removed.
    assert await audit(caught_up=False) == []
    assert await audit(caught_up=True) == [orphan]
    await bodies.flush()
    assert set(await system.objects.keys()) == {live.body_key, waiting.body_key, young, foreign}
