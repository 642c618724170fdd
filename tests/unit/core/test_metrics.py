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


def test_a_ready_service_reports_its_version_and_a_settings_hash_without_secrets() -> None:
    plain = settings.load(environment=False, s3_bucket="info-test")
    runtime = services.Runtime(settings=plain)
    runtime.ready("unit-info", "testing")
    text = telemetry.prometheus_text()[0].decode()
    # Services that ran earlier in this process report theirs too: this one's line only.
    [line] = [
        ln
        for ln in text.splitlines()
        if ln.startswith("empath_instance_info{") and 'service="unit-info"' in ln
    ]
    assert f'version="{telemetry.version()}"' in line
    assert f'settings_hash="{metrics.settings_hash(plain)}"' in line
    assert line.endswith(" 1.0")


def test_the_settings_hash_changes_with_a_setting_but_not_with_a_secret() -> None:
    base = settings.load(environment=False, nats_url="nats://127.0.0.1:4222")
    other_secrets = settings.load(
        environment=False,
        nats_url="nats://someone:hunter2@127.0.0.1:4222",
        s3_secret_key="another-secret",
        nats_user="someone",
        nats_password="hunter2",
    )
    other_bucket = settings.load(environment=False, s3_bucket="elsewhere")
    assert metrics.settings_hash(other_secrets) != metrics.settings_hash(other_bucket)
    assert metrics.settings_hash(base) != metrics.settings_hash(other_bucket)
    # The user is not a secret; the password and the URL's credentials are.
    same_user = settings.load(environment=False, nats_user="someone", nats_password="x")
    assert metrics.settings_hash(other_secrets) == metrics.settings_hash(same_user)
