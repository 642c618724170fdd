"""Telemetry as an operator sees it: the services run as on Kubernetes (one process each,
`empath ingress`, `empath spool`, `empath delivery`), push OTLP/HTTP to a collector (a receiver
on loopback decoding the real protobuf payloads), and serve `/metrics` to scrapers. One message
is deferred once by the remote MX, then delivered on the retry."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import parser

from empath.core import addresses, names, settings
from tests import monitoring, otlp, system
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx
from tests.servers import free_port, probe_ok
from tests.waiting import eventually
from tests.wire import Wire

EMPATH = str(Path(sys.executable).parent / "empath")
SERVICES = ("ingress", "spool", "delivery")


@pytest.fixture
async def receiver() -> AsyncIterator[otlp.Receiver]:
    server = otlp.Receiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def services(
    make_settings: Callable[..., settings.Settings],
    receiver: otlp.Receiver,
    dns: DnsServer,
    mx_port: int,
) -> AsyncIterator[tuple[settings.Settings, dict[str, int]]]:
    """The three services in processes of their own, exporting every 200 ms."""
    config = make_settings(
        dns_nameservers=[f"127.0.0.1:{dns.port}"],
        delivery_port=mx_port,
        retry_schedule=[0, 1],
        scheduler_interval=0.2,
        delivery_rate_per_domain=0,
        otlp_endpoint=receiver.endpoint,
        shutdown_grace=0,
    )
    health = {name: free_port() for name in SERVICES}
    processes: list[subprocess.Popen[str]] = []
    try:
        for name in SERVICES:
            env = {
                **system.environment(config),
                "EMPATH_HEALTH_LISTEN": f"127.0.0.1:{health[name]}",
                "OTEL_METRIC_EXPORT_INTERVAL": "200",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
            process = await asyncio.to_thread(
                subprocess.Popen,
                [EMPATH, name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append(process)
            await probe_ok(f"http://127.0.0.1:{health[name]}/readyz", process, timeout=60)
        yield config, health
    finally:
        for process in processes:
            process.terminate()
        for name, process in zip(SERVICES, processes, strict=False):
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
            # Shown by pytest when the test failed: what each service said.
            print(f"--- empath {name}:\n{process.stdout.read() if process.stdout else ''}")


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


@pytest.fixture
async def prometheus(
    services: tuple[settings.Settings, dict[str, int]], tmp_path: Path
) -> AsyncIterator[str]:
    """A real Prometheus (Debian's, see `.ci/ensure-prometheus`) scraping every service's
    `/metrics` twice a second; its HTTP API's base URL."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is not installed: run .ci/ensure-prometheus"
    _, health = services
    targets = ", ".join(f"'127.0.0.1:{port}'" for port in health.values())
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "scrape_configs:\n"
        "  - job_name: empath\n"
        "    scrape_interval: 500ms\n"
        "    scrape_timeout: 400ms\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n"
    )
    port = free_port()
    process = await asyncio.to_thread(
        subprocess.Popen,
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await probe_ok(f"http://127.0.0.1:{port}/-/ready", process, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)


async def promql(base: str, query: str) -> float | None:
    """The one value of an instant PromQL query, or None while it has none."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{base}/api/v1/query", params={"query": query})
    assert reply.status_code == 200, reply.text
    result = reply.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def summed(samples: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and labels.items() <= dict(pairs).items()
    )


async def test_one_deferred_then_delivered_message_is_in_the_metrics_and_in_one_trace(
    services: tuple[settings.Settings, dict[str, int]],
    receiver: otlp.Receiver,
    remote: Callable[..., Any],
    dns: DnsServer,
) -> None:
    config, health = services
    server = await remote("127.0.0.2", rcpt_reply="451 4.3.0 try later")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))

    wire = await Wire.open(addresses.parse_hostport(config.smtp_listen)[1])
    queued = await wire.transaction("a@sender.test", ["u@dest.test"], BODY)
    await wire.close()
    assert queued.startswith("250 2.0.0 Ok: queued as ")
    queue_id = queued.rsplit(" ", 1)[1]

    # The collector sees the deferral; then the remote takes mail and the retry delivers.
    retrying = "empath.delivery.messages.retrying.total"
    await eventually(
        lambda: receiver.total(retrying, status_class="4xx", enhanced="4.3"),
        until=lambda n: n == 1,
        what="the deferral in the exported metrics",
        timeout=30,
    )
    server.rcpt_reply = None
    await arrivals(server, 1, timeout=30)
    await eventually(
        lambda: receiver.total("empath.delivery.messages.delivered.total", status_class="2xx"),
        until=lambda n: n == 1,
        what="the delivery in the exported metrics",
        timeout=30,
    )
    assert receiver.total("empath.smtp.messages.received.total", tls="no") == 1
    assert receiver.total("empath.smtp.message.size.bytes") == 1
    assert receiver.total("empath.smtp.connections.total") == 1
    assert receiver.total("empath.smtp.command.duration.seconds", command="RCPT") == 1
    assert receiver.total("empath.delivery.attempts.total", outcome="deferred") == 1
    assert receiver.total("empath.delivery.attempts.total", outcome="delivered") == 1
    assert receiver.total("empath.delivery.messages.failed.total") == 0
    assert receiver.total("empath.dns.lookups.total", type="MX") >= 1
    assert receiver.total("empath.dns.cache.misses.total") >= 1
    assert receiver.total("empath.nats.publish.duration.seconds") >= 4
    assert receiver.total("empath.store.operation.duration.seconds", operation="put") == 1
    await eventually(
        lambda: receiver.total("empath.delivery.queue.size", state="delivered"),
        until=lambda n: n == 1,
        what="the delivered message in the queue gauge",
        timeout=30,
    )
    backlog = {
        dict(labels)["consumer"]
        for metric, _, labels in receiver.points
        if metric == "empath.nats.consumer.backlog"
    }
    assert backlog >= {names.SPOOL_RECEIVED_CONSUMER, names.DELIVERY_JOBS_CONSUMER}
    await eventually(
        lambda: receiver.total("empath.nats.consumer.backlog"),
        until=lambda n: n == 0,
        what="every consumer to have nothing left to fetch",
    )
    services_seen = {r["service.name"] for r in receiver.resources}
    assert services_seen == {f"empath-{name}" for name in SERVICES}
    assert all(r["service.version"] and r["service.instance.id"] for r in receiver.resources)

    # One trace, from SMTP to the remote MX's reply, across both attempts: child spans.
    def spans() -> list[otlp.Span]:
        return receiver.trace(queue_id)

    span_names = lambda found: sorted(s.name for s in found)  # noqa: E731
    found = await eventually(
        spans,
        until=lambda found: span_names(found).count("spool.outcome") == 2,
        what="both attempts' spans in the message's trace",
        timeout=30,
    )
    assert len({s.trace_id for s in found}) == 1
    for name, count in [
        ("ingress.queue", 1),
        ("spool.intake", 1),
        ("spool.dispatch", 2),
        ("delivery.attempt", 2),
        ("spool.outcome", 2),
        ("smtp.transaction", 2),
    ]:
        assert span_names(found).count(name) == count, span_names(found)
    by_id = {s.span_id: s for s in found}
    roots = [s for s in found if s.parent_id not in by_id]
    assert [s.name for s in roots] == ["ingress.queue"]
    for attempt in (s for s in found if s.name == "delivery.attempt"):
        parent = by_id[attempt.parent_id]
        while parent.name != "spool.dispatch":
            parent = by_id[parent.parent_id]
        assert by_id[parent.parent_id].name == "spool.intake"
    assert {s.service for s in found} == {f"empath-{name}" for name in SERVICES}
    assert {"dns.query", "smtp.connect", "store.put", "store.get", "kv.update"} <= set(
        span_names(found)
    )
    for exchange in (s for s in found if s.name == "smtp.transaction"):
        assert by_id[exchange.parent_id].name == "delivery.attempt"

    # A scraper sees the same counts on each service's health listener.
    ingress = await scrape(health["ingress"])
    assert summed(ingress, "empath_smtp_messages_received_total") == 1
    delivery = await scrape(health["delivery"])
    assert summed(delivery, "empath_delivery_messages_delivered_total") == 1
    assert summed(delivery, "empath_delivery_messages_retrying_total") == 1
    spool = await scrape(health["spool"])
    assert summed(spool, "empath_delivery_queue_size", state="delivered") == 1


async def test_prometheus_scraping_the_services_answers_how_much_came_in_and_went_out(
    services: tuple[settings.Settings, dict[str, int]],
    prometheus: str,
    remote: Callable[..., Any],
    dns: DnsServer,
) -> None:
    config, _ = services
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    wire = await Wire.open(addresses.parse_hostport(config.smtp_listen)[1])
    for _ in range(2):
        assert (await wire.transaction("a@sender.test", ["u@dest.test"], BODY)).startswith("250")
    await wire.close()
    await arrivals(server, 2, timeout=30)
    for query in (
        "sum(empath_smtp_messages_received_total)",
        "sum(empath_delivery_messages_delivered_total)",
        'sum(empath_delivery_queue_size{state="delivered"})',
    ):
        await eventually(
            lambda query=query: promql(prometheus, query),
            until=lambda value: value == 2,
            what=f"Prometheus to answer 2 to {query}",
            timeout=30,
        )
    assert await promql(prometheus, 'sum(up{job="empath"})') == len(SERVICES)


async def test_every_metric_the_dashboard_and_the_alerts_name_is_in_prometheus_scrape(
    services: tuple[settings.Settings, dict[str, int]],
    prometheus: str,
    remote: Callable[..., Any],
    dns: DnsServer,
) -> None:
    """After one message, Prometheus holds every series the chart's dashboard and alert rules
    query (the operator's own are checked against the operator, in the operator's tests), and
    each of those queries runs."""
    config, _ = services
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    wire = await Wire.open(addresses.parse_hostport(config.smtp_listen)[1])
    assert (await wire.transaction("a@sender.test", ["u@dest.test"], BODY)).startswith("250")
    await wire.close()
    await arrivals(server, 1, timeout=30)
    wanted = {name for name in monitoring.queried() if not name.startswith("empath_operator_")}

    async def stored() -> set[str]:
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"{prometheus}/api/v1/label/__name__/values")
        return {monitoring.family(name) for name in reply.json()["data"]}

    names = await eventually(
        stored,
        until=lambda found: wanted <= found,
        what="every metric the dashboard and the rules name",
        timeout=30,
    )
    assert wanted <= names, sorted(wanted - names)
    queries = [r["expr"] for r in monitoring.rules()] + monitoring.dashboard_queries()
    async with httpx.AsyncClient() as http:
        for query in queries:
            if query.startswith("label_values"):
                continue  # Grafana's, not PromQL
            promql_text = query.replace("$namespace", ".*").replace("$mailserver", ".*")
            reply = await http.get(f"{prometheus}/api/v1/query", params={"query": promql_text})
            assert reply.status_code == 200, (query, reply.text)
