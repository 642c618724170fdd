"""Fixtures: real servers on free loopback ports, and the Empath services running on them.

SeaweedFS takes seconds to start, so one serves the whole session and each test gets its own
bucket. nats-server starts in a blink, so each test gets its own (and so its own streams and
KV buckets). Services run in the test's event loop (`empath up` runs each in a process of its
own; the tests of `empath up` cover that).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings
from minio import Minio

from empath.core import bus, flags, names, services, settings, store, telemetry
from empath.spool import records
from tests import servers
from tests import system as system_module
from tests.dns_server import DnsServer
from tests.remote import Remote
from tests.system import StartSystem, System
from tests.waiting import eventually

# Property tests check what comes out, not how fast: on a loaded 2-core machine one example
# may take longer than Hypothesis' default 200 ms deadline, which would fail a correct test.
hypothesis_settings.register_profile("empath", deadline=None)
hypothesis_settings.load_profile("empath")


@pytest.fixture(scope="session", autouse=True)
def _telemetry() -> None:
    """Tracing set up as the `empath` command sets it up (no exporter)."""
    telemetry.setup(service="tests", otlp_endpoint=None)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with servers.seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as url:
        yield url


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with servers.nats_server(tmp_path) as url:
        yield url


@pytest.fixture
def secure_nats(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A nats-server with a user per role (`natsauth`): its URL and the password files."""
    with servers.secure_nats(tmp_path / "secure-nats") as found:
        yield found


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[servers.RestartableNats]:
    """A nats-server the test may stop and start again (for tests of a NATS restart)."""
    server = servers.RestartableNats(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[str]:
    """A bucket of this test's own, removed afterwards (SeaweedFS frees its volumes)."""
    name = f"t-{secrets.token_hex(6)}"
    yield name
    client = Minio(
        urlsplit(s3_endpoint).netloc,
        access_key=servers.S3_ACCESS_KEY,
        secret_key=servers.S3_SECRET_KEY,
        secure=False,
    )
    if client.bucket_exists(name):
        for item in client.list_objects(name, recursive=True):
            client.remove_object(name, str(item.object_name))
        client.remove_bucket(name)


@pytest.fixture
def make_settings(
    nats_url: str, s3_endpoint: str, bucket: str, tmp_path: Path
) -> Callable[..., settings.Settings]:
    def make(**overrides: Any) -> settings.Settings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "nats_reconnect_wait": 0.2,
            "publish_timeout": 2.0,
            "s3_endpoint": s3_endpoint,
            "s3_access_key": servers.S3_ACCESS_KEY,
            "s3_secret_key": servers.S3_SECRET_KEY,
            "s3_bucket": bucket,
            "s3_timeout": 5.0,
            "smtp_listen": f"127.0.0.1:{servers.free_port()}",
            "hostname": "mx.test",
            "relay_domains": ["example.com"],
            "data_dir": tmp_path,
            "shutdown_grace": 5.0,
        }
        values.update(overrides)
        return settings.Settings(**values)

    return make


@pytest.fixture
async def start_system(
    make_settings: Callable[..., settings.Settings],
) -> AsyncIterator[StartSystem]:
    started: list[System] = []
    helpers: list[tuple[bus.Bus, store.ObjectStore]] = []
    mains = services.discover()

    async def start(
        *,
        only: tuple[str, ...] = ("ingress", "spool"),
        frozen: bool = False,
        direct: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> System:
        """Start services; `frozen` freezes the queue first, so messages stay `queued`.

        The test looks at the queue through `direct` (by default the fixtures' own NATS and
        bucket), never through a proxy a test may cut.
        """
        config = make_settings(**overrides)
        look = make_settings(**(direct or {}))
        if frozen:
            setup = await bus.connect(look, name="test-setup")
            try:
                await flags.set_frozen(await setup.key_value(names.FLAGS_BUCKET), True)
            finally:
                await setup.close()
        ready, on_ready = system_module.all_ready(only)
        runtime = services.Runtime(settings=config, on_ready=on_ready)
        task = asyncio.create_task(services.run_all({n: mains[n] for n in only}, runtime))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            runtime.stop.set()
            await task  # raises the service's error
            raise AssertionError("services did not become ready")
        helper_bus = await bus.connect(look, name="test")
        objects = store.ObjectStore(look)
        helpers.append((helper_bus, objects))
        kv = await helper_bus.key_value(names.QUEUE_BUCKET)
        system = System(config, runtime, task, helper_bus, objects, records.Records(kv))
        started.append(system)
        return system

    try:
        yield start
        for system in started:
            if not system.task.done():
                await system.stop()
    finally:
        for system in started:
            system.runtime.stop.set()
        for helper_bus, objects in helpers:
            await helper_bus.close()
            objects.close()


@pytest.fixture
async def system(start_system: StartSystem) -> System:
    """Ingress and spool with the queue frozen: what is accepted stays `queued`."""
    return await start_system(frozen=True)


@pytest.fixture(autouse=True)
async def _no_asyncio_pending_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (kopf's hygiene)."""
    before = asyncio.all_tasks()
    yield

    def leftover() -> set[asyncio.Task[Any]]:
        return {
            t
            for t in asyncio.all_tasks() - before
            if not t.done() and t is not asyncio.current_task()
        }

    try:
        await eventually(leftover, until=lambda tasks: not tasks, what="no task left running")
    except AssertionError as error:
        for task in leftover():
            task.cancel()
        pytest.fail(str(error))


# -- delivery: real DNS and remote MX hosts on loopback ----------------------------------------


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def mx_port() -> int:
    """The one port every remote MX of a test listens on (each on its own loopback address),
    which delivery is told with EMPATH_DELIVERY_PORT."""
    return servers.free_port()


@pytest.fixture
async def remote(mx_port: int) -> AsyncIterator[Callable[..., Any]]:
    """Start a remote MX on a loopback address: `await remote("127.0.0.2", **behaviour)`."""
    started: list[Remote] = []

    async def start(host: str, **behaviour: Any) -> Remote:
        server = Remote(name=f"mx.{host}", host=host, port=mx_port, **behaviour)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
def relay_settings(dns: DnsServer, mx_port: int) -> dict[str, Any]:
    """The settings of a relay that resolves through the test's DNS server, delivers to the
    test's remote MX hosts, and retries and dispatches within a test's patience."""
    return {
        "dns_nameservers": [f"127.0.0.1:{dns.port}"],
        "delivery_port": mx_port,
        "retry_schedule": [0, 1],
        "scheduler_interval": 0.2,
        "delivery_rate_per_domain": 0,
    }


@pytest.fixture
def relay(start_system: StartSystem, relay_settings: dict[str, Any]) -> Callable[..., Any]:
    """Start ingress, spool and delivery with `relay_settings`."""

    async def start(**overrides: Any) -> System:
        values: dict[str, Any] = {"only": ("ingress", "spool", "delivery"), **relay_settings}
        values.update(overrides)
        return await start_system(**values)

    return start
