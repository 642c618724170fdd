"""The control service without NATS: its health fails while the connection is lost, and it
comes back by itself, whether nats-server restarts or the client closed the connection."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from empath.control import link
from empath.core import health, settings, up
from tests import servers
from tests.conftest import StartSystem
from tests.test_control import TOKEN, call


class Nats:
    """A nats-server of the test's own, which the test may stop and start again (same port,
    same JetStream directory: a restart)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = servers.free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        argv = up.nats_argv(host="127.0.0.1", port=self.port, store_dir=self.directory / "js")
        stack = contextlib.ExitStack()
        stack.enter_context(servers.running(argv, self.port, self.directory / "nats.log"))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Wait for `condition` (a function, or a coroutine function) to hold."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        done = condition()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not {what} in {timeout} s"
        await asyncio.sleep(0.05)


async def test_health_fails_while_nats_restarts_and_the_service_works_again_after(
    start_system: StartSystem, own_nats: Nats
) -> None:
    system = await start_system(
        only=("control",),
        nats_url=own_nats.url,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{servers.free_port()}",
        direct={"nats_url": own_nats.url},
    )
    probes = health.Health(system.runtime)  # what EMPATH_HEALTH_LISTEN serves the operator
    probes.mark_ready("control", "")

    async def status(path: str) -> int:
        return (await call(system, "GET", path, token=None)).status_code

    async def probe() -> int:
        return (await probes.readyz(None)).status  # type: ignore[arg-type]

    assert (await status("/healthz"), await status("/readyz"), await probe()) == (200, 200, 200)

    await asyncio.to_thread(own_nats.stop)

    async def down() -> bool:
        return await status("/healthz") == 503

    await until(down, "unhealthy")
    answer = await call(system, "GET", "/healthz", token=None)
    assert "NATS" in answer.json()["error"]
    assert await status("/readyz") == 503
    assert await probe() == 503
    overrides = await call(system, "GET", "/api/v1/dns/overrides")
    assert overrides.status_code == 503

    await asyncio.to_thread(own_nats.start)

    async def up_again() -> bool:
        return await status("/healthz") == 200

    await until(up_again, "healthy again")
    assert await probe() == 200
    put = await call(
        system, "PUT", "/api/v1/dns/overrides/dest.test", json={"target": "mx.elsewhere.test"}
    )
    assert put.status_code == 200, put.text
    listed = (await call(system, "GET", "/api/v1/dns/overrides")).json()["items"]
    assert [item["domain"] for item in listed] == ["dest.test"]


async def test_a_connection_closed_for_good_is_replaced_by_a_new_one(
    make_settings: Callable[..., settings.Settings],
) -> None:
    config = make_settings()
    connection = await link.Link.open(config)
    stop = asyncio.Event()
    keeper = asyncio.create_task(link.keep(connection, config, stop))
    try:
        first = connection.bus
        await first.nc.close()  # as nats.py does on any error the server reports
        assert connection.problem() is not None
        await until(lambda: connection.bus is not first, "replaced")
        await until(lambda: connection.problem() is None, "connected")
        await connection.overrides.put("dest.test", b"mx.test:25")
        assert (await connection.overrides.get("dest.test")).value == b"mx.test:25"
    finally:
        stop.set()
        await keeper
        await connection.bus.close()


async def test_the_status_reports_nats_down_while_it_is(
    start_system: StartSystem, own_nats: Nats
) -> None:
    system = await start_system(
        only=("control",),
        nats_url=own_nats.url,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{servers.free_port()}",
        direct={"nats_url": own_nats.url},
    )
    await asyncio.to_thread(own_nats.stop)

    async def reported() -> bool:
        answer = await call(system, "GET", "/api/v1/system/status")
        return answer.status_code == 200 and answer.json()["nats"]["ok"] is False

    await until(reported, "reported down")
    await asyncio.to_thread(own_nats.start)

    async def back() -> bool:
        answer = await call(system, "GET", "/api/v1/system/status")
        return answer.json()["nats"]["ok"] is True and bool(answer.json()["instances"])

    await until(back, "reported up with its heartbeat")
