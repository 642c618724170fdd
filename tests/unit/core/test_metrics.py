"""Metrics: the instruments reach `/metrics` on the health listener, with bounded attributes."""

from __future__ import annotations

import httpx
import pytest

from empath.core import health, ids, metrics, services, settings, telemetry
from tests.servers import free_port


async def test_a_counter_is_served_on_the_health_listener_in_prometheus_text() -> None:
    port = free_port()
    runtime = services.Runtime(settings=settings.Settings())
    before = await _scrape(port, runtime, "empath_store_errors_total")
    metrics.store_errors.add(1, {"operation": "unit-test"})
    after = await _scrape(port, runtime, "empath_store_errors_total")
    assert after == before + 1


async def _scrape(port: int, runtime: services.Runtime, name: str) -> float:
    async with health.serving(runtime, f"127.0.0.1:{port}"), httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in reply.text.splitlines()
        if line.startswith(name + "{") and 'operation="unit-test"' in line
    )


def test_the_resource_names_the_service_its_version_and_this_process() -> None:
    attributes = telemetry.resource("spool").attributes
    assert attributes["service.name"] == "empath-spool"
    assert attributes["service.version"] == telemetry.version()
    assert attributes["service.instance.id"] == ids.INSTANCE


@pytest.mark.parametrize(
    ("reply", "status", "enhanced"),
    [
        ("250 2.0.0 Ok: queued", "2xx", "2.0"),
        ("451 4.4.1 Connection refused", "4xx", "4.4"),
        ("550-5.1.1 No such user", "5xx", "5.1"),
        ("421 Service not available", "4xx", "none"),
        ("garbage", "other", "none"),
    ],
)
def test_a_reply_is_reported_by_its_classes_only(reply: str, status: str, enhanced: str) -> None:
    assert metrics.status_class(reply) == status
    assert metrics.enhanced_class(reply) == enhanced
