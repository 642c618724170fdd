"""A running Empath in a test: its services, and a look into its queue, bucket and streams.

The look goes through the test's own NATS connection and S3 client, never through the
services', so a test may cut a service's connection and still see what was kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from empath.core import (
    addresses,
    bus,
    errors,
    ids,
    names,
    natsauth,
    queue,
    services,
    settings,
    store,
    up,
)
from empath.spool import records
from tests.waiting import eventually
from tests.wire import Wire

# A finished record old enough for any retention: the scheduler purges it on its next look.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class System:
    """Services running in this test, and a look into their queue and bucket."""

    settings: settings.Settings
    runtime: services.Runtime
    task: asyncio.Task[None]
    bus: bus.Bus
    objects: store.ObjectStore
    records: records.Records

    @property
    def smtp_port(self) -> int:
        return addresses.parse_hostport(self.settings.smtp_listen)[1]

    @property
    def submission_port(self) -> int:
        assert self.settings.submission_listen
        return addresses.parse_hostport(self.settings.submission_listen)[1]

    async def wire(self, port: int | None = None) -> Wire:
        return await Wire.open(port or self.smtp_port)

    async def entry(self, message_id: str, timeout: float = 10.0) -> queue.Entry:
        """The queue record of a message, waiting for the spool to write it."""
        return await eventually(
            lambda: self.records.get(message_id),
            what=f"the queue record of {message_id}",
            timeout=timeout,
            ignoring=(errors.NotFound,),
        )

    async def listed(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the spool's query API (its live view, which follows KV a moment behind)
        counts `count` messages."""

        async def total() -> int:
            reply = await self.bus.nc.request(names.QUERY_COUNTS_SUBJECT, b"{}", timeout=5)
            return int(json.loads(reply.data)["counts"]["total"])

        await eventually(
            total,
            until=lambda n: n >= count,
            what=f"the query API to count {count}",
            timeout=timeout,
        )

    async def consumed(
        self, stream: names.StreamSpec, consumer: str, *, timeout: float = 10.0
    ) -> None:
        """Wait until `consumer` has acked every message its stream holds now: whatever those
        messages make the service do has been done."""
        last = (await self.bus.js.stream_info(stream.name)).state.last_seq

        async def floor() -> int:
            info = await self.bus.js.consumer_info(stream.name, consumer)
            return int(info.ack_floor.stream_seq or 0)

        await eventually(
            floor,
            until=lambda seq: seq >= last,
            what=f"{consumer} to ack {stream.name} up to {last}",
            timeout=timeout,
        )

    async def scheduler_looked(self, *, timeout: float = 10.0) -> None:
        """Wait until the spool's scheduler has looked at every record written so far, and
        finished acting on what it saw.

        It purges a finished record older than the retention on its next look, so a sentinel
        record written now is gone once a look saw everything written before it (its view
        follows KV in order). A look dispatches after it purges, so two sentinels in turn:
        the second is purged by a later look, which began after the first look ended.
        """
        template = next(iter(await self.entries()), None)
        assert template is not None, "the scheduler's look is proved on a queue with a message"
        for _ in range(2):
            sentinel_id = ids.new_id()
            sentinel = template.model_copy(
                update={
                    "id": sentinel_id,
                    # Its own body key: purging a finished record removes its body too.
                    "body_key": store.body_key(sentinel_id, LONG_AGO),
                    "state": queue.State.DELIVERED,
                    "next_attempt": None,
                    "history": (),
                    "updated_at": LONG_AGO,
                    "received_at": LONG_AGO,
                }
            )
            key = names.queue_key(sentinel.id)
            await self.records.kv.put(key, sentinel.model_dump_json().encode())

            async def purged(message_id: str = sentinel.id) -> bool:
                try:
                    await self.records.get(message_id)
                except errors.NotFound:
                    return True
                return False

            await eventually(
                purged, what="the scheduler to purge a finished record", timeout=timeout
            )

    async def entries(self) -> list[queue.Entry]:
        return await self.records.all()

    async def bodies(self) -> list[str]:
        return await self.objects.keys()

    async def stop(self) -> None:
        self.runtime.stop.set()
        await asyncio.wait_for(self.task, 30)


StartSystem = Callable[..., Awaitable[System]]


def all_ready(
    only: tuple[str, ...],
) -> tuple[asyncio.Event, Callable[[str, str], None]]:
    """An event set once every service of `only` said it is ready, and the `on_ready` of a
    `services.Runtime` that they say it to."""
    ready = asyncio.Event()
    waiting = set(only)

    def on_ready(service: str, detail: str) -> None:
        waiting.discard(service)
        if not waiting:
            ready.set()

    return ready, on_ready


def environment(config: settings.Settings) -> dict[str, str]:
    """The environment that gives a service process started by a test exactly `config` (and
    nothing from the test runner's own `EMPATH_*`), in the forms the README documents."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")}
    return env | settings.environment(config)


def as_roles(
    mains: dict[str, services.ServiceMain], runtime: services.Runtime, credentials: Path
) -> dict[str, services.ServiceMain]:
    """Each service run with its own NATS credentials (and otherwise the same runtime: one
    stop signal, one readiness)."""

    def bind(role: str, main: services.ServiceMain) -> services.ServiceMain:
        own = services.Runtime(
            settings=up.role_settings(runtime.settings, role, credentials),
            stop=runtime.stop,
            on_ready=runtime.on_ready,
            checks=runtime.checks,
        )

        async def run(_: services.Runtime) -> None:
            await main(own)

        return run

    return {
        name: bind(name, main) if name in natsauth.ROLES else main for name, main in mains.items()
    }


@contextlib.asynccontextmanager
async def as_roles_running(
    config: settings.Settings, only: tuple[str, ...], credentials: Path
) -> AsyncIterator[System]:
    """The services `only`, in this process, each on its own NATS user (as `empath up` runs
    them), once the admin made the streams and buckets; the test looks as the spool does."""
    ready, on_ready = all_ready(only)
    await up.prepare(up.role_settings(config, natsauth.ADMIN, credentials))
    runtime = services.Runtime(settings=config, on_ready=on_ready)
    mains = as_roles({n: services.discover()[n] for n in only}, runtime, credentials)
    task = asyncio.create_task(services.run_all(mains, runtime))
    look = await bus.connect(up.role_settings(config, "spool", credentials), name="test")
    objects = store.ObjectStore(config)
    try:
        await asyncio.wait_for(ready.wait(), 30)
        kv = await look.key_value(names.QUEUE_BUCKET)
        yield System(config, runtime, task, look, objects, records.Records(kv))
    finally:
        runtime.stop.set()
        await task
        await look.close()
        objects.close()
