"""The consume loop every service shares (`bus.consume`): a handler that takes longer than the
consumer's ack wait keeps its message, by reporting progress, and it is handled once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.msg import Msg

from empath.core import bus, names, settings


async def test_a_message_handled_for_longer_than_the_ack_wait_is_not_redelivered(
    make_settings: Callable[..., settings.Settings],
) -> None:
    connection = await bus.connect(make_settings(), name="tests")
    stop = asyncio.Event()
    handled: list[bytes] = []
    finished = asyncio.Event()

    async def handle(msg: Msg) -> None:
        handled.append(msg.data)
        await asyncio.sleep(3.5)  # the work: three and a half times the ack wait
        finished.set()

    try:
        await connection.js.publish(names.ATTEMPTED_SUBJECT, b"slow")
        consuming = asyncio.create_task(
            bus.consume(
                connection,
                stream=names.ATTEMPTED_STREAM,
                subject=names.ATTEMPTED_SUBJECT,
                durable="tests-progress",
                handle=handle,
                stop=stop,
                concurrency=4,
                ack_wait=1.0,
            )
        )
        await asyncio.wait_for(finished.wait(), timeout=30)
        # Past another ack wait: a message not acked in progress would have come again.
        await asyncio.sleep(1.5)
        stop.set()
        await consuming
        info = await connection.js.consumer_info(names.ATTEMPTED_STREAM.name, "tests-progress")
    finally:
        stop.set()
        await connection.close()
    assert handled == [b"slow"]
    assert (info.num_ack_pending, info.num_redelivered) == (0, 0)
