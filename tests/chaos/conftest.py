"""The chaos suite's fleet: NATS, an object store, ingress, spool and two delivery workers,
each a process of its own that a test may kill, and a sink that records every delivery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from empath.core import bus, names, settings, signing
from empath.spool import records
from tests import fleet, servers
from tests.remote import Remote

FUZZED = ("ingress", "spool", "control")
SERVICES = {
    "ingress": "ingress",
    "spool": "spool",
    "delivery-1": "delivery",
    "delivery-2": "delivery",
}


def fleet_settings(
    nats_url: str, s3_url: str, sink_port: int, *, keys: Path, **overrides: Any
) -> settings.Settings:
    """Settings as an operator would choose them, with the waits of a fault shortened to
    seconds so the suite's run fits in CI."""
    sink = f"127.0.0.1:{sink_port}"
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "nats_reconnect_wait": 0.2,
        "publish_timeout": 2.0,
        "s3_endpoint": s3_url,
        "s3_access_key": servers.S3_ACCESS_KEY,
        "s3_secret_key": servers.S3_SECRET_KEY,
        "s3_bucket": "chaos",
        "s3_timeout": 3.0,
        "smtp_listen": f"127.0.0.1:{servers.free_port()}",
        "hostname": "mx.chaos.test",
        "relay_domains": ["dest.test"],
        # Deliveries and the bounces (none are expected) all go to the sink.
        "mx_overrides": {"dest.test": sink, "sender.test": sink},
        "retry_schedule": [0, 1],
        "scheduler_interval": 0.2,
        "delivery_rate_per_domain": 0,
        "delivery_ack_wait": 3.0,
        "shutdown_grace": 1.0,
    }
    # The event keys, made in `keys` as `empath up` makes them: ingress and the spool share
    # the spool's (which the spool trusts as its own).
    made = signing.ensure_keys(keys)
    values["event_signing_key_file"] = made[signing.SPOOL_KEY]
    values["event_trusted_keys_file"] = made[signing.TRUSTED_KEYS]
    values.update(overrides)
    return settings.Settings(**values)


@pytest.fixture
async def start_fleet(tmp_path: Path) -> AsyncIterator[fleet.StartFleet]:
    started: list[fleet.Fleet] = []
    parts: list[fleet.Service | fleet.ObjectStore | fleet.Nats] = []
    sinks: list[Remote] = []
    looks: list[bus.Bus] = []

    async def start(*, sink_delay: float = 0.0, **overrides: Any) -> fleet.Fleet:
        (tmp_path / "nats").mkdir()
        nats = fleet.Nats(tmp_path / "nats")
        nats.start()
        parts.append(nats)
        objects = fleet.ObjectStore(tmp_path / "s3")
        parts.append(objects)
        sink = Remote(name="sink.test", data_delay=sink_delay)
        await sink.start()
        sinks.append(sink)
        config = fleet_settings(
            nats.url, objects.url, sink.port, keys=tmp_path / "keys", **overrides
        )
        services = {
            label: fleet.Service(name, config, tmp_path, label=label)
            for label, name in SERVICES.items()
        }
        await asyncio.to_thread(objects.start)
        for service in services.values():
            parts.append(service)
            service.start()
        await asyncio.gather(*(service.ready() for service in services.values()))
        look = await bus.connect(config, name="chaos-look")
        looks.append(look)
        found = fleet.Fleet(
            config=config,
            nats=nats,
            objects=objects,
            services=services,
            sink=sink,
            look=look,
            records=records.Records(await look.key_value(names.QUEUE_BUCKET)),
        )
        started.append(found)
        return found

    try:
        yield start
    finally:
        for part in reversed(parts):
            await asyncio.to_thread(part.end)
        for sink in sinks:
            await sink.close()
        for look in looks:
            await look.close()
        for found in started:
            for label, service in found.services.items():
                # Shown by pytest when the test failed: the end of what each service said.
                print(f"--- {label} (started {service.starts}x):\n{service.output()[-3000:]}")


@pytest.fixture(scope="module")
async def fuzz_target(
    s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[fleet.Target]:
    """Ingress, spool and control as processes, on a NATS of their own and a bucket of their
    own, for one module of fuzzing; short SMTP timeouts, so an abandoned session is reaped in
    seconds, and room for every connection a fuzz run leaves open."""
    directory = tmp_path_factory.mktemp("fuzz")
    with servers.nats_server(directory / "nats") as nats_url:
        config = fleet_settings(
            nats_url,
            s3_endpoint,
            servers.free_port(),
            keys=directory / "keys",
            s3_bucket=f"fuzz-{secrets.token_hex(4)}",
            smtp_command_timeout=2.0,
            smtp_data_timeout=2.0,
            smtp_data_deadline=4.0,
            max_connections_per_ip=500,
            control_listen=f"127.0.0.1:{servers.free_port()}",
            control_token=fleet.TOKEN,
        )
        services = {name: fleet.Service(name, config, directory) for name in FUZZED}
        for service in services.values():
            service.start()
        try:
            await asyncio.gather(*(service.ready() for service in services.values()))
            yield fleet.Target(config, services)
        finally:
            for service in services.values():
                service.end()
