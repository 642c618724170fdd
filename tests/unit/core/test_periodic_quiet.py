"""The loops every service runs while NATS may be away (the heartbeat, in-progress acks) warn
once when it goes and say when it is back, instead of warning every interval."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import nats.errors
import pytest

from empath.core import bus as bus_module

DOWN = "nats: no servers available for connection"


class Services:
    """The services bucket: `put` fails while `down` says so; stops the beat after `beats`."""

    def __init__(self, down: list[bool], stop: asyncio.Event) -> None:
        self.down = down
        self.stop = stop
        self.puts = 0

    async def put(self, key: str, value: bytes) -> int:
        self.puts += 1
        if len(self.down) == 1:
            self.stop.set()
        if self.down.pop(0):
            raise nats.errors.NoServersError
        return self.puts

    async def purge(self, key: str) -> None:
        pass


async def test_the_heartbeat_warns_once_while_nats_is_down_and_tells_when_it_beats_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    bucket = Services([True] * 5 + [False, False], stop)

    async def key_value(name: str) -> Services:
        return bucket

    async def stream_info(name: str) -> SimpleNamespace:  # the bucket, as configured
        return SimpleNamespace(config=SimpleNamespace(num_replicas=1, placement=None))

    bus = bus_module.Bus(
        nc=None,  # type: ignore[arg-type]
        js=SimpleNamespace(key_value=key_value, stream_info=stream_info),  # type: ignore[arg-type]
        publish_timeout=1.0,
    )
    with caplog.at_level(logging.INFO, logger="empath.core.bus"):
        await asyncio.wait_for(bus.heartbeat("delivery", stop, every=0.001), timeout=5.0)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert bucket.puts == 7
    assert [level for level, _ in messages] == ["WARNING", "INFO"]
    assert messages[0][1].endswith(DOWN)
    assert messages[1][1].endswith(": working again")


async def test_in_progress_acks_warn_once_while_nats_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = 0
    enough = asyncio.Event()

    async def in_progress() -> None:
        nonlocal tries
        tries += 1
        if tries == 5:
            enough.set()
        raise nats.errors.NoServersError

    with caplog.at_level(logging.INFO, logger="empath.core.bus"):
        msg = SimpleNamespace(in_progress=in_progress)
        async with bus_module.keep_alive(msg, every=0.001):  # type: ignore[arg-type]
            await asyncio.wait_for(enough.wait(), timeout=5.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"in-progress ack: {DOWN}")
    ]
