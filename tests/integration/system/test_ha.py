"""High availability on NATS: a three-node JetStream cluster loses a node, then another, while
mail comes in, and nothing answered 250 is lost; one node alone keeps what it acknowledged
through a `kill -9`; a running installation takes a new replica count.

The cluster is three real nats-server processes routed on loopback (`tests/nats_cluster.py`);
SeaweedFS, DNS and the remote MX are the usual ones. Clients behave as MTAs do: a 4xx reply or
a dropped connection means "try again shortly", never "lost".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from empath.core import errors, names
from tests import nats_cluster
from tests.dns_server import DnsServer
from tests.mail import mx, send
from tests.remote import Remote
from tests.system import StartSystem, System
from tests.waiting import eventually
from tests.wire import Wire

# Messages sent through the cluster while its nodes are killed: enough that each kill lands in
# the middle of the traffic, few enough that the test takes well under a minute on two cores
# (1,000 took 33 s on an idle machine and 58 s on a busy one).
MESSAGES = 800
# SMTP clients sending them at once.
CLIENTS = 8
# Every stream and bucket a system of ingress, spool and delivery makes.
STREAMS = (
    *(spec.name for spec in names.STREAMS),
    *(
        f"KV_{bucket}"
        for bucket in (
            names.QUEUE_BUCKET,
            names.FLAGS_BUCKET,
            names.SERVICES_BUCKET,
            names.DNS_BUCKET,
        )
    ),
)
SEQ = re.compile(rb"^X-Seq: (\d+)\r$", re.MULTILINE)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[nats_cluster.Cluster]:
    """Three nats-server processes with routes and JetStream (set up before, and so stopped
    after, the services that use it)."""
    with nats_cluster.running(tmp_path / "cluster") as started:
        yield started


@dataclass
class Senders:
    """MTA-like clients: each message is sent until it is answered 250; what every attempt was
    answered is kept, so the test can say no 5xx came and which messages were accepted.

    Messages from `gate` on wait until the test moves the gate: so a node dies while the
    messages before the gate are still coming in, never after the last one went through."""

    port: int
    gate: int = 0
    accepted: dict[int, str] = field(default_factory=dict)  # sequence number -> queue id
    replies: list[str] = field(default_factory=list)  # every final reply, 4xx included
    _moved: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, count: int, clients: int) -> None:
        todo: asyncio.Queue[int] = asyncio.Queue()
        for seq in range(count):
            todo.put_nowait(seq)
        await asyncio.gather(*(self._client(todo) for _ in range(clients)))

    async def open_to(self, gate: int) -> None:
        async with self._moved:
            self.gate = gate
            self._moved.notify_all()

    async def _client(self, todo: asyncio.Queue[int]) -> None:
        wire: Wire | None = None
        while not todo.empty():
            seq = todo.get_nowait()
            async with self._moved:
                await self._moved.wait_for(lambda seq=seq: seq < self.gate)  # type: ignore[misc]
            while True:
                try:
                    if wire is None:
                        wire = await Wire.open(self.port)
                        await wire.command("EHLO client.test")
                    reply = await self._transaction(wire, seq)
                except (ConnectionError, TimeoutError):
                    reply = "421 connection lost"  # as an MTA sees it: try again
                    wire = None
                self.replies.append(reply)
                if reply.startswith("250 "):
                    self.accepted[seq] = reply.rsplit(" ", 1)[1]
                    break
                assert reply.startswith("4"), f"message {seq} was refused: {reply}"
                if wire is not None:
                    await wire.command("RSET")
                await asyncio.sleep(0.2)  # an MTA's retry, much shortened
        if wire is not None:
            await wire.close()

    @staticmethod
    async def _transaction(wire: Wire, seq: int) -> str:
        for command in ("MAIL FROM:<a@sender.test>", "RCPT TO:<u@dest.test>"):
            reply = await wire.command(command)
            if not reply.startswith("250"):
                return reply
        reply = await wire.command("DATA")
        if not reply.startswith("354"):
            return reply
        await wire.send(f"Subject: ha {seq}\r\nX-Seq: {seq}\r\n\r\nbody {seq}\r\n.\r\n".encode())
        return await wire.reply(timeout=30)


async def until_accepted(senders: Senders, count: int) -> None:
    await eventually(
        lambda: len(senders.accepted),
        until=lambda n: n >= count,
        what=f"{count} messages accepted",
        timeout=60,
    )


async def test_every_message_answered_250_is_delivered_while_nats_nodes_die_one_by_one(
    cluster: nats_cluster.Cluster,
    relay: Callable[..., Any],
    remote: Callable[..., Any],
    dns: DnsServer,
) -> None:
    await cluster.ready()
    server: Remote = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    own = {"nats_url": cluster.url, "nats_replicas": 3}
    system: System = await relay(direct=own, delivery_concurrency=50, **own)
    senders = Senders(system.smtp_port, gate=MESSAGES * 4 // 10)
    sending = asyncio.create_task(senders.run(MESSAGES, CLIENTS))

    # The node leading the stream ingress publishes to dies mid-traffic ...
    await until_accepted(senders, MESSAGES // 4)
    first = await cluster.leader(names.RECEIVED_STREAM.name)
    first.kill()
    at_first_kill = len(senders.accepted)
    await senders.open_to(MESSAGES * 55 // 100)
    # ... comes back and catches up ...
    await until_accepted(senders, MESSAGES * 45 // 100)
    first.start()
    for stream in STREAMS:
        await cluster.current(stream, first)
    await senders.open_to(MESSAGES * 8 // 10)
    # ... and then another node dies, for good: two of three carry on.
    await until_accepted(senders, MESSAGES * 6 // 10)
    leader = await cluster.leader(names.RECEIVED_STREAM.name)
    second = leader if leader is not first else next(n for n in cluster.nodes if n is not first)
    second.kill()
    at_second_kill = len(senders.accepted)
    await senders.open_to(MESSAGES)
    await asyncio.wait_for(sending, 120)

    # Both kills came while messages were still coming in.
    assert at_first_kill < MESSAGES * 4 // 10
    assert at_second_kill < MESSAGES * 8 // 10
    assert len(senders.accepted) == MESSAGES
    assert all(reply.startswith(("250 ", "4")) for reply in senders.replies)

    def delivered() -> set[int]:
        return {int(m.group(1)) for a in server.arrived for m in SEQ.finditer(a.data)}

    await eventually(
        delivered,
        until=lambda seqs: seqs >= set(senders.accepted),
        what=f"all {MESSAGES} accepted messages at the remote MX",
        timeout=120,
    )
    # Nothing is left behind in the queue: it holds the accepted messages, each delivered
    # (a message answered 451 left nothing, even when its event reached the stream).
    states = await eventually(
        lambda: _states(system),
        until=lambda found: set(found.values()) == {"delivered"},
        what="every message in the queue delivered",
        timeout=60,
    )
    assert set(states) == set(senders.accepted.values())


async def _states(system: System) -> dict[str, str]:
    return {e.id: e.state for e in await system.entries()}


async def test_a_message_answered_250_survives_kill_9_of_a_lone_nats(
    start_system: StartSystem, tmp_path: Path
) -> None:
    """One node, configured as `empath up` configures it (every write synced before the ack):
    the message is in JetStream the moment the client hears 250, so a `kill -9` of nats-server
    right then loses nothing. (This is the process crash; the README says what a machine crash
    does.)"""
    with nats_cluster.running(tmp_path / "lone", size=1, sync_always=True) as lone:
        node = lone.nodes[0]
        own = {"nats_url": node.url}
        system = await start_system(direct=own, frozen=True, **own)
        queue_id = await send(system, "a@sender.test", ["u@example.com"])
        node.kill()
        node.start()
        # Asked while the test's own connection may still be reconnecting.
        entry = await eventually(
            lambda: system.records.get(queue_id),
            what=f"the queue record of {queue_id} after the restart",
            timeout=30,
            ignoring=(errors.NotFound, errors.BusUnavailable),
        )
        assert entry.state == "queued"
        assert [r.address for r in entry.recipients] == ["u@example.com"]
        assert await system.objects.exists(entry.body_key)
        await system.stop()


async def test_a_running_installation_takes_a_new_replica_count(
    cluster: nats_cluster.Cluster, start_system: StartSystem
) -> None:
    """EMPATH_NATS_REPLICAS changed from 1 to 3 and the services restarted: every stream and
    bucket they made now has three replicas, the JetStream API says so, and what the queue held
    is still there."""
    await cluster.ready()
    one = {"nats_url": cluster.url, "nats_replicas": 1}
    only = ("ingress", "spool", "delivery")
    before = await start_system(only=only, direct=one, frozen=True, **one)
    queue_id = await send(before, "a@sender.test", ["u@example.com"])
    await before.entry(queue_id)
    for stream in STREAMS:
        info = await before.bus.js.stream_info(stream)
        assert info.config.num_replicas == 1, stream
    await before.stop()

    three = {"nats_url": cluster.url, "nats_replicas": 3}
    after = await start_system(only=only, direct=three, frozen=True, **three)

    async def replicas(stream: str) -> tuple[int | None, int]:
        info = await after.bus.js.stream_info(stream)
        peers = [p for p in (info.cluster.replicas or []) if p.current] if info.cluster else []
        return info.config.num_replicas, 1 + len(peers)

    for stream in STREAMS:
        await eventually(
            lambda stream=stream: replicas(stream),  # type: ignore[misc]
            until=lambda found: found == (3, 3),
            what=f"{stream} to have three current replicas",
            timeout=30,
        )
    entry = await after.entry(queue_id)
    assert entry.state == "queued"
