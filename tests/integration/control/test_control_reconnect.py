"""The control service without NATS: its health fails while the connection is lost, and it
comes back by itself, whether nats-server restarts or the client closed the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from empath.control import link
from empath.core import health, settings
from tests import servers
from tests.control_client import TOKEN, call
from tests.system import StartSystem, System
from tests.waiting import eventually


@pytest.fixture
async def system(start_system: StartSystem, restartable_nats: servers.RestartableNats) -> System:
    """The control service alone, on a nats-server the test may restart."""
    return await start_system(
        only=("control",),
        nats_url=restartable_nats.url,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{servers.free_port()}",
        direct={"nats_url": restartable_nats.url},
    )


async def test_health_fails_while_nats_restarts_and_the_service_works_again_after(
    system: System, restartable_nats: servers.RestartableNats
) -> None:
    probes = health.Health(system.runtime)  # what EMPATH_HEALTH_LISTEN serves the operator
    probes.mark_ready("control", "")

    async def status(path: str) -> int:
        return (await call(system, "GET", path, token=None)).status_code

    async def probe() -> int:
        return (await probes.readyz(None)).status  # type: ignore[arg-type]

    assert (await status("/healthz"), await status("/readyz"), await probe()) == (200, 200, 200)

    await asyncio.to_thread(restartable_nats.stop)

    async def down() -> bool:
        return await status("/healthz") == 503

    await eventually(down, what="unhealthy", timeout=20)
    answer = await call(system, "GET", "/healthz", token=None)
    assert "NATS" in answer.json()["error"]
    assert await status("/readyz") == 503
    assert await probe() == 503
    overrides = await call(system, "GET", "/api/v1/dns/overrides")
    assert overrides.status_code == 503
    refreshed = await call(system, "POST", "/api/v1/dns/refresh/dest.test")
    assert refreshed.status_code == 503, refreshed.text

    await asyncio.to_thread(restartable_nats.start)

    async def up_again() -> bool:
        return await status("/healthz") == 200

    await eventually(up_again, what="healthy again", timeout=20)
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
        await eventually(lambda: connection.bus is not first, what="replaced", timeout=20)
        await eventually(lambda: connection.problem() is None, what="connected", timeout=20)
        await connection.overrides.put("dest.test", b"mx.test:25")
        assert (await connection.overrides.get("dest.test")).value == b"mx.test:25"
    finally:
        stop.set()
        await keeper
        await connection.bus.close()


async def test_the_status_reports_nats_down_while_it_is(
    system: System, restartable_nats: servers.RestartableNats
) -> None:
    await asyncio.to_thread(restartable_nats.stop)

    async def reported() -> bool:
        answer = await call(system, "GET", "/api/v1/system/status")
        return answer.status_code == 200 and answer.json()["nats"]["ok"] is False

    await eventually(reported, what="reported down", timeout=20)
    await asyncio.to_thread(restartable_nats.start)

    async def back() -> bool:
        answer = await call(system, "GET", "/api/v1/system/status")
        return answer.json()["nats"]["ok"] is True and bool(answer.json()["instances"])

    await eventually(back, what="reported up with its heartbeat", timeout=20)
