"""Event plugins: they read the plugin events stream at their own pace, catch up on what they
missed while stopped, and see the metadata validation plugins set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from empath.core import pluginevents, plugins
from tests.control_client import view_rows, with_control
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.system import System
from tests.waiting import eventually

EVENTS = list(plugins.EVENT_HOOKS)
WATCHER = {"name": "watcher", "hooks": EVENTS}


@asynccontextmanager
async def following(system: System, seen: list[plugins.Event]) -> AsyncIterator[None]:
    """The event plugin `watcher` running, as a plugin process would run it."""
    stop = asyncio.Event()

    async def handle(event: plugins.Event) -> None:
        seen.append(event)

    task = asyncio.create_task(
        pluginevents.follow(system.bus, plugin="watcher", handle=handle, stop=stop)
    )
    try:
        yield
    finally:
        stop.set()
        await task


def about(seen: list[plugins.Event], queue_id: str) -> list[str]:
    return [e.event for e in seen if e.id == queue_id]


async def test_an_event_plugin_stopped_while_mail_flows_gets_every_event_it_missed(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(plugins=[WATCHER])
    before: list[plugins.Event] = []
    async with following(system, before):
        first = await send(system, "a@sender.test", ["u@dest.test"])
        await eventually(
            lambda: about(before, first),
            until=lambda kinds: "delivered" in kinds,
            what="the first message's events",
        )
    # The plugin is down: two messages go through meanwhile.
    missed = [await send(system, "a@sender.test", [f"u{n}@dest.test"]) for n in (2, 3)]
    for queue_id in missed:
        await settle(system, queue_id, "delivered")
    after: list[plugins.Event] = []
    async with following(system, after):
        for queue_id in missed:
            await eventually(
                lambda queue_id=queue_id: about(after, queue_id),
                until=lambda kinds: "delivered" in kinds,
                what=f"the events of {queue_id}",
            )
        await eventually(
            lambda: [e.event for e in after].count("connection_closed"),
            until=lambda closed: closed >= 2,
            what="both sessions' ends",
        )
    for queue_id in missed:
        assert sorted(about(after, queue_id)) == [
            "delivered",
            "delivery_attempt",
            "message_received",
        ]
    assert not about(after, first)  # what it acked before stopping is not handed again
    opened = {e.session.id for e in after if e.event == "connection_opened" and e.session}
    closed = {e.session.id for e in after if e.event == "connection_closed" and e.session}
    assert len(opened) == 2
    assert opened == closed
    delivered = next(e for e in after if e.event == "delivered" and e.id == missed[0])
    assert delivered.delivery is not None
    assert (delivered.delivery.domain, delivered.delivery.server, delivered.delivery.attempt) == (
        "dest.test",
        "mx.dest.test",
        1,
    )
    entry = await system.records.get(missed[0])
    assert delivered.delivery.reply == entry.recipients[0].last_reply
    assert delivered.delivery.reply.startswith("250 2.0.0 Ok: queued as R")


async def test_metadata_set_at_rcpt_is_in_queue_view_and_in_the_delivery_events(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    # The remote MX defers the message, so it stays in the queue with its body, for `view`.
    await remote("127.0.0.2", refuse={"u@dest.test": "451 4.2.0 Mailbox busy"})
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(
        retry_schedule=[0, 60],
        **with_control("ingress", "spool", "delivery"),
        plugins=[
            {
                "name": "tagger",
                "hooks": ["rcpt"],
                "module": "tests.integration.plugins.samples:refuse_nobody",
            },
            WATCHER,
        ],
    )
    seen: list[plugins.Event] = []
    async with following(system, seen):
        queue_id = await send(system, "a@sender.test", ["u@dest.test"])
        await settle(system, queue_id, "deferred")
        await eventually(
            lambda: about(seen, queue_id),
            until=lambda kinds: "deferred" in kinds,
            what="the deferred event",
        )
    assert sorted(about(seen, queue_id)) == ["deferred", "delivery_attempt", "message_received"]
    tags = {"score": "0.5", "checked.0": "1"}
    for event in seen:
        if event.id == queue_id:
            assert event.metadata == tags, event.event
    rows = await view_rows(system, queue_id)
    assert ["metadata", "checked.0=1"] in rows
    assert ["metadata", "score=0.5"] in rows
