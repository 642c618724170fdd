"""Per-destination limits and the circuit breaker, held across two delivery workers.

Each test runs two delivery services with their own NATS connections (and EHLO names, so the
remote tells whose session it is), or one as a process of its own that is killed, against
aiosmtpd remotes on loopback that count deliveries in progress.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors

from empath.core import (
    addresses,
    names,
    queries,
    settings,
    telemetry,
)
from empath.delivery import limits
from tests import fleet, servers
from tests import system as system_module
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.system import System
from tests.waiting import eventually

# The old per-worker name the `relay` fixture sets, unset: these tests use the new ones.
NEW_NAMES: dict[str, Any] = {"delivery_rate_per_domain": None}


async def two_workers(relay: Callable[..., Any], **settings: Any) -> System:
    """Ingress, spool and a delivery worker named `one.test`, and a second worker `two.test`."""
    system = await relay(hostname="one.test", **NEW_NAMES, **settings)
    await relay(only=("delivery",), hostname="two.test", **NEW_NAMES, **settings)
    return system


async def test_two_workers_together_keep_to_the_domains_concurrency(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", data_delay=1.0)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    # Each worker alone could have 3 in flight: 6 at once if the limit held per worker.
    system = await two_workers(relay, delivery_destination_concurrency=3, delivery_concurrency=3)
    ids = await asyncio.gather(*(send(system, "a@sender.test", ["u@dest.test"]) for _ in range(14)))
    for queue_id in ids:
        await settle(system, queue_id, "delivered", timeout=60)
    assert len(server.arrived) == 14
    assert {a.helo for a in server.arrived} == {"one.test", "two.test"}  # both delivered
    assert server.most_in_data == 3  # never more, and the limit was used


async def test_a_rate_limit_holds_across_both_workers(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", data_delay=0.1)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await two_workers(relay, delivery_rate_limits={"dest.test": 4}, delivery_concurrency=2)
    ids = await asyncio.gather(*(send(system, "a@sender.test", ["u@dest.test"]) for _ in range(10)))
    for queue_id in ids:
        await settle(system, queue_id, "delivered", timeout=60)
    assert {a.helo for a in server.arrived} == {"one.test", "two.test"}
    times = sorted(a.at for a in server.arrived)
    # 4 a second for the pair: 8 a second if each worker kept its own.
    assert times[-1] - times[0] >= (len(times) - 1) / 4 - 0.3


async def test_a_killed_workers_slots_come_back_after_its_lease(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, tmp_path: Path
) -> None:
    server = await remote("127.0.0.2", data_delay=60)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    common: dict[str, Any] = {
        **NEW_NAMES,
        "delivery_ack_wait": 2.0,
        "delivery_destination_concurrency": 2,
        "delivery_limits_lease": 3.0,
    }
    system = await relay(only=("ingress", "spool"), **common)  # the first worker: a process
    with fleet.running("delivery", system.settings, tmp_path) as worker:
        ids = [await send(system, "a@sender.test", ["u@dest.test"]) for _ in range(3)]
        # Both of the domain's slots are the process's, each in a DATA that lasts a minute.
        await eventually(
            lambda: worker.alive_or_fail() and server.in_data,
            until=lambda n: n == 2,
            what="two sessions in DATA",
            timeout=30,
        )
        worker.kill()
    kv = await system.bus.js.key_value(names.LIMITS_BUCKET)
    record = json.loads((await kv.get(limits.key_of("slots.", "dest.test"))).value or b"{}")
    assert [h["held"] for h in record["holders"].values()] == [2]  # still the dead one's
    server.data_delay = 0
    killed = asyncio.get_running_loop().time()
    await relay(only=("delivery",), **common)
    for queue_id in ids:
        await settle(system, queue_id, "delivered", timeout=30)
    # The lease (3 s) ran out and the second worker took the slots: seconds, not the minute
    # the dead worker's sessions would have lasted.
    assert asyncio.get_running_loop().time() - killed < 20
    assert len(server.arrived) == 3


class Refusing:
    """A remote MX that answers every connection `421` and hangs up; it counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"421 4.3.2 mx.down.test Service not available\r\n")
        await writer.drain()
        writer.close()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def circuit_of(system: System, domain: str) -> dict[str, Any]:
    try:
        kv = await system.bus.js.key_value(names.LIMITS_BUCKET)
        entry = await kv.get(limits.key_of(names.CIRCUIT_KEY_PREFIX, domain))
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return {}
    return dict(json.loads(entry.value or b"{}"))


def scraped_state(domain: str) -> float | None:
    for line in telemetry.prometheus_text()[0].decode().splitlines():
        if line.startswith("empath_delivery_circuit_state") and f'domain="{domain}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_the_circuit_opens_after_the_failures_blocks_probes_and_closes(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, mx_port: int
) -> None:
    down = Refusing()
    await down.start("127.0.0.2", mx_port)
    mx(dns, "down.test", (10, "mx.down.test", "127.0.0.2"))
    system = await two_workers(
        relay,
        delivery_circuit_failures=3,
        delivery_circuit_window=60,
        delivery_circuit_cooldown=5,
        retry_schedule=[0, 2],  # a retry comes well after the first attempts, on a busy machine
    )
    # Sent together, so their first attempts fail together (retries come seconds later).
    ids = list(
        await asyncio.gather(
            *(send(system, "a@sender.test", [f"u{n}@down.test"]) for n in range(3))
        )
    )
    opened = await eventually(
        lambda: circuit_of(system, "down.test"),
        until=lambda record: record.get("state") == "open",
        what="the circuit of down.test to open",
    )
    assert down.connections == 3
    assert "421 4.3.2" in opened["reason"]

    # Open: a new message is deferred at once, without a connection, saying why.
    ids.append(await send(system, "a@sender.test", ["u3@down.test"]))
    entry = await settle(system, ids[-1], "deferred")
    assert entry.recipients[0].last_reply.startswith("451 4.4.1 Delivery to down.test is")
    assert "suspended" in entry.recipients[0].last_reply
    assert entry.attempts == 1  # an attempt like any other: the retry schedule applies
    assert down.connections == 3
    reply = await system.bus.nc.request(names.QUERY_STATS_SUBJECT, b"{}", timeout=10)
    stats = queries.parse_answer(queries.StatsAnswer, reply.data)
    assert isinstance(stats, queries.StatsAnswer)
    assert [(c.domain, c.state, c.failures) for c in stats.circuits] == [("down.test", "open", 3)]
    await eventually(lambda: scraped_state("down.test"), until=lambda state: state == 2)

    # After the cool-down one message probes; it fails too, and the circuit opens again.
    reopened = await eventually(
        lambda: circuit_of(system, "down.test"),
        until=lambda record: record.get("state") == "open" and record["opened"] > opened["opened"],
        what="a failed probe to open the circuit again",
    )
    assert down.connections == 4  # the one probe, however many messages retried meanwhile
    assert reopened["until"] > opened["until"]

    # The remote is back: the next probe is delivered and closes the circuit; the rest follow.
    await down.close()
    server = await remote("127.0.0.2")
    for queue_id in ids:
        await settle(system, queue_id, "delivered", timeout=30)
    assert len(server.arrived) == 4
    assert (await circuit_of(system, "down.test"))["state"] == "closed"
    await eventually(lambda: scraped_state("down.test"), until=lambda state: state == 0)


async def test_delivery_and_the_spool_share_the_breakers_on_their_own_nats_credentials(
    secure_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    relay_settings: dict[str, Any],
    dns: DnsServer,
    mx_port: int,
) -> None:
    """Delivery creates the limits bucket, writes and watches it; the spool reads it for
    `queue stats` through the control API; neither needs a right its role does not have."""
    url, credentials = secure_nats
    down = Refusing()
    await down.start("127.0.0.2", mx_port)
    mx(dns, "down.test", (10, "mx.down.test", "127.0.0.2"))
    config = make_settings(
        **{**relay_settings, **NEW_NAMES, "retry_schedule": [0, 60]},
        nats_url=url,
        delivery_circuit_failures=1,
        control_token="test-token",
        control_listen=f"127.0.0.1:{servers.free_port()}",
    )
    only = ("ingress", "spool", "delivery", "control")
    try:
        async with system_module.as_roles_running(config, only, credentials) as system:
            await settle(system, await send(system, "a@sender.test", ["u@down.test"]), "deferred")
            host, port = addresses.parse_hostport(config.control_listen)

            async def circuits() -> list[Any]:
                async with httpx.AsyncClient(
                    headers={"Authorization": "Bearer test-token"}
                ) as http:
                    answer = await http.get(f"http://{host}:{port}/api/v1/queue/stats")
                assert answer.status_code == 200, answer.text
                return list(answer.json()["circuits"])

            [circuit] = await eventually(circuits, what="the open circuit in queue stats")
            assert (circuit["domain"], circuit["state"], circuit["failures"]) == (
                "down.test",
                "open",
                1,
            )
            log = (credentials.parent / "nats-secure.log").read_text()
            assert "Violation" not in log, log[-2000:]
    finally:
        await down.close()
