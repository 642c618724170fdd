"""Chaos (issue 10): every part of Empath killed or restarted under load, and no mail lost.

NATS, the object store, ingress, the spool and two delivery workers run as processes of their
own. Clients that retry on 4xx as MTAs do send messages with unique ids; a sink records every
delivery. Meanwhile a test kills (`kill -9`) and restarts the parts, then waits for the queue
to drain and checks what a postmaster would: every message answered 250 arrived, duplicates
only among the messages in flight at a kill, nothing left in the queue, and every part that
was not restarted by the test came back by itself.

`CHAOS_MESSAGES` sets the number of messages per run (`make chaos-long` sends the issue's
2,000; CI sends fewer to keep the suite fast), `CHAOS_RATE` how many new messages a second the
clients send while parts are killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg

from empath.core import flags, names
from tests import fleet, traffic
from tests.waiting import eventually

MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "240"))
# New messages a second while parts are killed: the sending lasts long enough for every fault
# to meet mail at every stage (SMTP, queue, delivery).
RATE = float(os.environ.get("CHAOS_RATE", "20"))
# Generous: the two-core CI machine runs this beside other suites.
DRAIN_SECONDS = 90 + MESSAGES / 10
# A run starts six processes, sends at RATE and waits for the drain: longer than most tests.
pytestmark = pytest.mark.timeout(180 + 2 * MESSAGES / RATE + DRAIN_SECONDS)


def chaos_ids(run: str) -> list[str]:
    return [f"{run}-{n:05d}" for n in range(MESSAGES)]


def queue_ids(clients: traffic.Clients) -> set[str]:
    return {queue_id for found in clients.accepted.values() for queue_id in found}


async def check_outcome(
    found: fleet.Fleet, clients: traffic.Clients, sent: list[str], *, in_flight: int, what: str
) -> traffic.Tally:
    """The assertions every run ends with; the tally, printed for the record."""
    assert clients.refused == {}, "a client was refused for good"
    assert set(clients.accepted) == set(sent), "a client gave up on a message"
    started = time.monotonic()
    entries = await found.drained(queue_ids(clients), timeout=DRAIN_SECONDS)
    print(f"{what}: drained in {time.monotonic() - started:.1f}s")
    # A finished message's body is deleted; one a killed ingress stored without queueing it
    # (its client was told nothing, and sent the message again) is an orphan.
    bodies = set(await found.bodies())
    kept = [e.id for e in entries if e.body_key in bodies]
    print(f"{what}: {len(bodies) - len(kept)} orphaned bodies, {len(kept)} kept")
    tally = traffic.Tally.of(found.sink)
    print(
        f"{what}: {len(sent)} sent, {len(tally.counts)} delivered, {tally.duplicates} "
        f"duplicates (bound {in_flight}), {clients.retries} client retries"
    )
    for label, output in found.tracebacks().items():
        # Not a failure by itself (a fault may surprise a service), but worth a look.
        print(f"{what}: {label} logged a traceback:\n{output[output.index('Traceback') :][:1500]}")
    assert tally.missing(set(sent)) == set(), "a message answered 250 never arrived"
    assert tally.others == 0, "a message bounced"
    assert tally.duplicates <= in_flight, "more duplicates than messages in flight at the kills"
    return tally


async def came_back(found: fleet.Fleet) -> None:
    """Every service is running and ready: those the test did not restart rode out the NATS
    and object-store restarts by themselves (`ready` fails on a process that exited), and the
    queue drained through them."""
    for service in found.services.values():
        await service.ready(timeout=30)


async def test_without_faults_every_message_arrives_exactly_once(
    start_fleet: fleet.StartFleet,
) -> None:
    found = await start_fleet()
    sent = chaos_ids("calm")
    clients = traffic.Clients(found.smtp_port)
    await clients.send(sent)
    tally = await check_outcome(found, clients, sent, in_flight=0, what="baseline")
    assert clients.retries == 0
    assert set(tally.counts.values()) == {1}
    await came_back(found)
    assert found.tracebacks() == {}


async def test_parts_killed_and_restarted_under_load_lose_no_message(
    start_fleet: fleet.StartFleet,
) -> None:
    found = await start_fleet()
    sent = chaos_ids("storm")
    clients = traffic.Clients(found.smtp_port)

    async def kill_object_store() -> None:
        await asyncio.to_thread(found.objects.kill)
        await asyncio.to_thread(found.objects.start)

    faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("kill -9 a delivery worker", lambda: found.restart("delivery-1")),
        ("kill -9 the spool", lambda: found.restart("spool")),
        ("kill -9 ingress", lambda: found.restart("ingress")),
        ("restart NATS", lambda: asyncio.to_thread(found.nats.restart)),
        ("kill -9 the object store", kill_object_store),
    ]
    # The messages go in one chunk per fault and one more, each chunk at a steady rate. A fault
    # strikes once half its chunk is accepted, and the next chunk waits for it to strike: so
    # every fault meets mail in SMTP, in the queue and out for delivery, however long the
    # restarts take on a busy machine.
    size = -(-MESSAGES // (len(faults) + 1))
    chunks = [sent[n : n + size] for n in range(0, MESSAGES, size)]
    struck = [asyncio.Event() for _ in faults]

    async def send() -> None:
        for n, chunk in enumerate(chunks):
            if n:
                await struck[n - 1].wait()
            await clients.send(chunk, rate=RATE)

    sending = asyncio.create_task(send())
    in_flight = 0
    try:
        for n, (what, act) in enumerate(faults):
            half = n * size + size // 2
            await eventually(
                lambda half=half: len(clients.accepted) >= half,
                what=f"{half} messages accepted before: {what}",
                timeout=DRAIN_SECONDS,
            )
            in_flight += await found.in_flight() + clients.awaiting_reply
            struck[n].set()
            started = time.monotonic()
            await act()
            print(f"{what} at {len(clients.accepted)} accepted: {time.monotonic() - started:.1f}s")
        await asyncio.wait_for(sending, DRAIN_SECONDS)
    finally:
        sending.cancel()
    await check_outcome(found, clients, sent, in_flight=in_flight, what="faults")
    await came_back(found)


async def test_a_spool_killed_dispatching_a_backlog_and_nats_restarted_mid_delivery_lose_nothing(
    start_fleet: fleet.StartFleet,
) -> None:
    # A slow remote (0.2 s a message); no worker is killed here, so the ack wait is the default.
    found = await start_fleet(sink_delay=0.2, delivery_ack_wait=30.0)
    switches = await found.look.key_value(names.FLAGS_BUCKET)
    await flags.set_frozen(switches, True)
    sent = chaos_ids("backlog")
    clients = traffic.Clients(found.smtp_port)
    await clients.send(sent)
    await eventually(
        found.entries,
        until=lambda entries: entries is not None and len(entries) == MESSAGES,
        what="the whole backlog recorded",
        timeout=DRAIN_SECONDS,
    )

    spool = found.services["spool"].process
    assert spool is not None
    killed: list[float] = []

    async def kill_at_first_job(_: Msg) -> None:
        # At once, in the callback, within milliseconds of the first job's publish.
        if not killed:
            spool.send_signal(signal.SIGKILL)
            killed.append(time.monotonic())

    watch = await found.look.nc.subscribe(names.JOBS_SUBJECT, cb=kill_at_first_job)
    await found.look.nc.flush()
    await flags.set_frozen(switches, False)
    await eventually(lambda: killed, what="the first dispatch of the backlog")
    await watch.unsubscribe()
    await asyncio.to_thread(spool.wait, 10)
    # The kill caught the spool in the middle of its dispatch, not after it.
    jobs = (await found.look.js.stream_info(names.JOBS_STREAM.name)).state.last_seq
    assert 0 < jobs < MESSAGES, f"{jobs} jobs out at the kill"
    in_flight = await found.in_flight()
    service = found.services["spool"]
    service.start()
    await service.ready()

    await eventually(
        lambda: len(found.sink.arrived),
        until=lambda n: n >= MESSAGES // 4,
        what="a quarter of the backlog delivered",
        timeout=DRAIN_SECONDS,
    )
    in_flight += await found.in_flight()
    await asyncio.to_thread(found.nats.restart)

    await check_outcome(found, clients, sent, in_flight=in_flight, what="backlog")
    await came_back(found)
