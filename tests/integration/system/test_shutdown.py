"""Graceful shutdown: stop accepting, let transactions in flight finish, lose nothing."""

from __future__ import annotations

import asyncio

from empath.core import bodies
from tests.system import StartSystem
from tests.wire import Wire


async def test_stop_finishes_the_transaction_in_flight_and_closes_idle_sessions(
    start_system: StartSystem,
) -> None:
    system = await start_system(shutdown_grace=10.0)
    idle = await system.wire()
    await idle.command("EHLO idle.test")
    busy = await system.wire()
    await busy.command("EHLO busy.test")
    await busy.command("MAIL FROM:<a@example.org>")
    await busy.command("RCPT TO:<u@example.com>")
    assert (await busy.command("DATA")).startswith("354")
    await busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")

    system.runtime.stop.set()
    assert await idle.reply() == "421 4.3.2 mx.test Service shutting down, try again later"
    assert await idle.closed()
    # The listener is closed before idle sessions are told 421: no new session now.
    try:
        refused = await Wire.open(system.smtp_port)
    except OSError:
        pass  # the listener is closed: what a stopping server should do
    else:
        await refused.close()
        raise AssertionError("a new connection was accepted while stopping")

    await busy.send(b"second half\r\n.\r\n")
    reply = await busy.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert (await busy.reply()).startswith("421 4.3.2 ")
    assert await busy.closed()
    await asyncio.wait_for(system.task, 30)
    for wire in (idle, busy):
        await wire.close()

    # Nothing accepted is lost: a new spool finds the message the stopped one may have missed.
    restarted = await start_system(only=("spool",))
    entry = await restarted.entry(reply.rsplit(" ", 1)[1])
    # (A small message: its `received` event carries it, until it has to wait.)
    found = bodies.Bodies(objects=restarted.objects, js=restarted.bus.js)
    assert (await found.get(entry)).endswith(b"first half\r\nsecond half\r\n")


async def test_stop_aborts_transactions_that_outlive_the_grace_period(
    start_system: StartSystem,
) -> None:
    system = await start_system(shutdown_grace=0.5)
    stuck = await system.wire()
    await stuck.command("EHLO slow.test")
    await stuck.command("MAIL FROM:<a@example.org>")
    system.runtime.stop.set()
    await asyncio.wait_for(system.task, 10)
    assert (await stuck.reply()).startswith("421 4.3.2 ")
    assert await stuck.closed()
    await stuck.close()
    assert await system.entries() == []
