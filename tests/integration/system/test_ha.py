"""High availability on NATS: a three-node JetStream cluster loses a node, then another, while
mail comes in, and nothing answered 250 is lost; one node alone keeps what it acknowledged
through a `kill -9`; a running installation takes a new replica count.

The cluster is three real nats-server processes routed on loopback (`tests/nats_cluster.py`);
SeaweedFS, DNS and the remote MX are the usual ones. Clients behave as MTAs do: a 4xx reply or
a dropped connection means "try again shortly", never "lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from empath.core import errors, flags, names, store, up
from tests import nats_cluster, servers
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
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
    senders = Senders(system.smtp_port, gate=MESSAGES // 2)
    sending = asyncio.create_task(senders.run(MESSAGES, CLIENTS))

    # The node leading the stream ingress publishes to (asked beforehand: leaders move only
    # when a node goes) dies mid-traffic ...
    first = await cluster.leader(names.RECEIVED_STREAM.name)
    await until_accepted(senders, MESSAGES // 4)
    first.kill()
    at_first_kill = len(senders.accepted)
    await senders.open_to(MESSAGES * 65 // 100)
    # ... comes back and catches up ...
    await until_accepted(senders, MESSAGES * 45 // 100)
    first.start()
    for stream in STREAMS:
        await cluster.current(stream, first)
    # ... and then another node dies, for good: two of three carry on.
    leader = await cluster.leader(names.RECEIVED_STREAM.name)
    second = leader if leader is not first else next(n for n in cluster.nodes if n is not first)
    await senders.open_to(MESSAGES * 9 // 10)
    await until_accepted(senders, MESSAGES * 7 // 10)
    second.kill()
    at_second_kill = len(senders.accepted)
    await senders.open_to(MESSAGES)
    await asyncio.wait_for(sending, 120)

    # Both kills came while messages were still coming in.
    assert at_first_kill < MESSAGES // 2
    assert at_second_kill < MESSAGES * 9 // 10
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
        assert node.varz()["jetstream"]["config"]["sync_always"] is True
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


async def test_a_body_the_stopped_object_store_cannot_give_defers_the_attempt_not_the_message(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, tmp_path: Path
) -> None:
    """SeaweedFS of this test's own, stopped after the message is accepted: delivery cannot read
    the body, so the attempt is deferred (never failed, never bounced), and once the store is
    back the next attempt delivers it."""
    server: Remote = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    port = servers.free_port()
    # The same command line (ports included) starts it again on the same data.
    argv = up.weed_argv(host="127.0.0.1", s3_port=port, data_dir=tmp_path / "weed", bucket=None)
    env = {**os.environ, **up.s3_credentials_env(servers.S3_ACCESS_KEY, servers.S3_SECRET_KEY)}
    log = tmp_path / "weed.log"
    (tmp_path / "weed").mkdir()
    with contextlib.ExitStack() as weed:
        weed.enter_context(servers.running(argv, port, log, env=env))
        own = {"s3_endpoint": f"http://127.0.0.1:{port}", "s3_timeout": 2.0}
        system: System = await relay(frozen=True, direct=own, **own)
        queue_id = await send(system, "a@sender.test", ["u@dest.test"])
        await system.entry(queue_id)

        weed.close()  # the object store stops
        await flags.set_frozen(await system.bus.key_value(names.FLAGS_BUCKET), False)
        deferred = await eventually(
            lambda: system.records.get(queue_id),
            until=lambda entry: entry.attempts >= 1 and entry.state == "deferred",
            what=f"{queue_id} deferred while the store is down",
            timeout=30,
        )
        assert deferred.recipients[0].status == "deferred"
        assert deferred.recipients[0].last_reply == (
            "451 4.3.0 The message body cannot be read from the spool now"
        )
        assert server.arrived == []

        weed.enter_context(servers.running(argv, port, log, env=env))
        entry = await settle(system, queue_id, "delivered", timeout=60)
        await arrivals(server, 1)
        assert b"Subject: hello" in server.arrived[0].data
        assert entry.attempts >= 2
        await system.stop()


class FlakyStore:
    """In front of the real S3 endpoint: the first `failures` connections get a 503 (S3's
    SlowDown, a store failing over), the rest are passed through."""

    def __init__(self, target_port: int, failures: int) -> None:
        self.target_port = target_port
        self.failures = failures
        self.connections = 0
        self.port = servers.free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening and cut what the client's pool keeps open."""
        if self._server is not None:
            self._server.close()
        for writer in self._open:
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections <= self.failures:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n")
            writer.write(b"Connection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_a_body_is_written_through_a_store_that_answers_503_at_first(
    make_settings: Callable[..., Any], s3_endpoint: str
) -> None:
    """The S3 client's own retries: the store refuses the body's PUT three times (503), the body
    is written anyway and reads back as sent; the caller saw no error."""
    direct = store.ObjectStore(make_settings())
    flaky = FlakyStore(int(s3_endpoint.rsplit(":", 1)[1]), failures=3)
    await flaky.start()
    # A region given: the client asks nothing before the PUT, so the PUT meets the 503s.
    through = make_settings(s3_endpoint=f"http://127.0.0.1:{flaky.port}", s3_region="us-east-1")
    objects = store.ObjectStore(through)
    try:
        await direct.ensure_bucket()
        await objects.put("messages/flaky.eml", b"Subject: retried\r\n\r\nbody\r\n")
        assert flaky.connections == 4
        assert await direct.get("messages/flaky.eml") == b"Subject: retried\r\n\r\nbody\r\n"
    finally:
        objects.close()
        direct.close()
        await flaky.close()
