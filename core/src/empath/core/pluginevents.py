"""Event hooks: services publish what happened, and each event plugin reads it at its own pace.

Events go to the JetStream stream `names.PLUGIN_EVENTS_STREAM`, one subject per event hook. A
service publishes only the events some plugin of `EMPATH_PLUGINS` names in its hooks, and
never waits for them: the publish runs beside the mail, and when it fails it is logged and
counted (`empath.plugin.events.failed.total`) and the mail goes on. An event plugin reads the
stream with a durable consumer of its own (`names.plugin_consumer`), so one that was stopped
finds every event it missed when it starts again (`follow`, the small runner for Python
plugins; any NATS client can do the same, see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from empath.core import addresses, errors, events, ids, names, plugins, telemetry
from empath.core import bus as bus_module

log = logging.getLogger("empath.core.pluginevents")

_meter = telemetry.meter("empath")
events_published = _meter.create_counter(
    "empath.plugin.events.total", description="Plugin events published, by event"
)
events_failed = _meter.create_counter(
    "empath.plugin.events.failed.total",
    description="Plugin events that could not be published (the mail went on)",
)

MAX_PENDING = 1000  # publishes in flight at once; beyond, events are dropped (and counted)


class Publisher:
    """Publishes the plugin events some plugin wants, in the background."""

    def __init__(self, bus: bus_module.Bus, *, wanted: Iterable[str], timeout: float) -> None:
        self.bus = bus
        self.wanted = frozenset(wanted)
        self.timeout = timeout
        self._pending: set[asyncio.Task[None]] = set()

    def wants(self, event: str) -> bool:
        return event in self.wanted

    def emit(self, event: plugins.Event, *, msg_id: str | None = None) -> None:
        """Publish `event` if a plugin wants it; returns at once. With `msg_id` (the same
        for the same event however often it is emitted), JetStream keeps one of its copies
        published within its duplicate window."""
        if event.event not in self.wanted:
            return
        if len(self._pending) >= MAX_PENDING:
            events_failed.add(1, {"event": event.event})
            log.warning("dropping a %s event: %d publishes in flight", event.event, MAX_PENDING)
            return
        task = asyncio.create_task(self._publish(event, msg_id or ids.new_id()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, event: plugins.Event, msg_id: str) -> None:
        subject = names.plugin_event_subject(event.event)
        try:
            if not self.bus.nc.is_connected:
                raise errors.BusUnavailable("not connected to NATS")
            await self.bus.js.publish(
                subject,
                event.model_dump_json().encode(),
                timeout=self.timeout,
                headers={"Nats-Msg-Id": msg_id},
            )
        except (nats.errors.Error, nats.js.errors.Error, OSError, errors.EmpathError) as error:
            events_failed.add(1, {"event": event.event})
            log.warning(
                "could not publish the %s event%s: %r",
                event.event,
                f" of {event.id}" if event.id else "",
                error,
            )
            return
        events_published.add(1, {"event": event.event})

    async def close(self, grace: float = 5.0) -> None:
        """Let the publishes in flight finish (for at most `grace` seconds)."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=grace)
        for task in late:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*late, return_exceptions=True)


def delivery_attempts(
    job: events.DeliveryJob, results: Iterable[events.RecipientResult], *, at: datetime
) -> list[plugins.Event]:
    """`delivery_attempt` events of one attempt: one per domain tried, with the MX host that
    answered, its reply, and the message's metadata."""
    by_domain: dict[str, list[events.RecipientResult]] = {}
    for result in results:
        by_domain.setdefault(addresses.domain_of(result.address), []).append(result)
    return [
        plugins.Event(
            event="delivery_attempt",
            at=at,
            service="delivery",
            id=job.id,
            sender=job.envelope.sender,
            recipients=tuple(r.address for r in tried),
            metadata=job.metadata,
            delivery=plugins.Delivery(
                domain=domain, server=tried[0].remote, reply=tried[0].reply, attempt=job.attempt
            ),
        )
        for domain, tried in by_domain.items()
    ]


EventHandler = Callable[[plugins.Event], Awaitable[None]]


async def follow(
    bus: bus_module.Bus,
    *,
    plugin: str,
    handle: EventHandler,
    stop: asyncio.Event,
    hooks: Iterable[str] | None = None,
) -> None:
    """Feed an event plugin its events until `stop` is set, from where it left off.

    The durable consumer `plugin-<plugin>` remembers how far the plugin got: an event is
    acked once `handle` returns, and redelivered later when `handle` raises (so a plugin that
    cannot take an event now raises and gets it again). Events of hooks not in `hooks` are
    acked unread.
    """
    wanted = set(hooks) if hooks is not None else set(plugins.EVENT_HOOKS)

    async def one(msg: Msg) -> None:
        try:
            event = plugins.Event.model_validate_json(msg.data)
        except ValueError as error:
            raise errors.BadEvent(f"unreadable plugin event: {error}") from error
        if event.event in wanted:
            await handle(event)

    await bus_module.consume(
        bus,
        stream=names.PLUGIN_EVENTS_STREAM,
        subject=f"{names.PLUGIN_EVENTS_PREFIX}.>",
        durable=names.plugin_consumer(plugin),
        handle=one,
        stop=stop,
        retry_delay=1.0,
    )
