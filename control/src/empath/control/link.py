"""The control service's NATS connection and the KV buckets it reads, kept open.

nats.py reconnects by itself after a lost socket, but closes the connection for good when the
server reports an error (a subject over the server's limits, say): every later call would
fail until a restart. `keep` hears of that from nats.py's closed callback and opens a new
connection in place of the closed one, while `Link.problem` tells the health checks whether
NATS can be used now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from empath.core import bus as bus_module
from empath.core import names, periodic
from empath.core.settings import Settings

log = logging.getLogger("empath.control")


@dataclass(slots=True)
class Link:
    """One connection and the buckets opened on it; `keep` swaps in a new one when it closes.

    Handlers read the fields at each call, so they always use the connection of the moment.
    """

    bus: bus_module.Bus
    services: KeyValue
    dns: KeyValue
    overrides: KeyValue
    retired: asyncio.Event = field(default_factory=asyncio.Event)  # ends this link's heartbeat

    @classmethod
    async def open(cls, settings: Settings) -> Link:
        """Connect (waiting for NATS as long as it takes) and open the buckets."""
        bus = await bus_module.connect(settings, name="control")
        try:
            return cls(
                bus=bus,
                services=await bus.key_value(
                    names.SERVICES_BUCKET, ttl=names.HEARTBEAT_TTL_SECONDS
                ),
                dns=await bus.key_value(names.DNS_BUCKET),
                overrides=await bus.key_value(names.OVERRIDES_BUCKET),
            )
        except BaseException:
            await bus.close()
            raise

    def problem(self) -> str | None:
        """Why NATS cannot be used now, or None when it can."""
        nc = self.bus.nc
        if nc.is_connected:
            return None
        if nc.is_closed:
            return f"the NATS connection was closed ({nc.last_error!r}); connecting again"
        return "not connected to NATS; reconnecting"

    def take(self, other: Link) -> None:
        """Use `other`'s connection and buckets from now on."""
        self.bus, self.services = other.bus, other.services
        self.dns, self.overrides = other.dns, other.overrides


async def keep(link: Link, settings: Settings, stop: asyncio.Event) -> None:
    """Until `stop`: renew the heartbeat, and replace the connection whenever it is closed."""
    while not stop.is_set():
        closed = _closing(link.bus)
        beat = asyncio.create_task(link.bus.heartbeat("control", link.retired))
        try:
            await _first(stop, closed)
        finally:
            link.retired.set()
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                await beat  # failed at once when the connection closed as it began
        if stop.is_set():
            return
        log.warning(
            "the NATS connection was closed (%r): opening a new one", link.bus.nc.last_error
        )
        fresh = await periodic.until_done(
            lambda: Link.open(settings),
            stop=stop,
            log=log,
            what="could not open a new NATS connection",
            delay=settings.nats_reconnect_wait,
        )
        if fresh is None:
            return
        old = link.bus
        link.take(fresh)
        link.retired = asyncio.Event()
        await old.close()
        log.info("connected to NATS again")


def _closing(bus: bus_module.Bus) -> asyncio.Event:
    """An event set when nats.py closes this connection for good.

    `bus.connect` takes no closed callback, so it is set on the client here (the option
    `nats.connect(closed_cb=...)` stores); the check after covers a close that came first.
    """
    closed = asyncio.Event()

    async def on_close() -> None:
        closed.set()

    bus.nc._closed_cb = on_close
    if bus.nc.is_closed:
        closed.set()
    return closed


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
