"""The operator's own metrics, as Prometheus scrapes them from its `/metrics`: reconciles by
result, their duration, failures by reason, and each MailServer's conditions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import parser

from tests.emulator import Cluster
from tests.operator_harness import (
    SERVERS,
    Api,
    condition,
    deployment_url,
    has_status,
    mailserver,
)
from tests.servers import free_port
from tests.waiting import passes

pytestmark = pytest.mark.kmock(cls=Cluster)

NAME = "metered"  # a name of its own: the process's metrics outlive each test


async def scrape(url: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with `labels` in the operator's `/metrics`."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(url)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return sum(
        sample.value
        for family in parser.text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == name and {"mailserver": NAME, **labels}.items() <= sample.labels.items()
    )


async def test_the_operator_serves_its_reconciles_and_the_servers_conditions_as_metrics(
    api: Api, operator: Any
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/metrics"
    await operator(metrics_listen=listen)
    ok = await scrape(url, "empath_operator_reconciles_total", result="ok")
    failed = await scrape(url, "empath_operator_reconcile_errors_total", reason="PermanentError")
    timed = await scrape(url, "empath_operator_reconcile_duration_seconds_count")

    await api.create(SERVERS, mailserver(NAME))
    await api.wait(f"{SERVERS}/{NAME}", lambda o: condition(o, "Ready").get("status") == "False")

    async def reconciled() -> None:
        assert await scrape(url, "empath_operator_reconciles_total", result="ok") == ok + 1
        assert await scrape(url, "empath_operator_reconcile_duration_seconds_count") == timed + 1
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Ready") == 0
        assert (
            await scrape(url, "empath_operator_mailserver_condition", condition="Progressing") == 1
        )

    await passes(reconciled, timeout=10)

    # A spec the services refuse: a failed reconcile, by reason, and Degraded is 1.
    await api.patch(f"{SERVERS}/{NAME}", {"spec": {"trustedNetworks": ["0.0.0.0/0"]}})
    await api.wait(f"{SERVERS}/{NAME}", lambda o: condition(o, "Degraded").get("status") == "True")

    async def refused() -> None:
        assert (
            await scrape(url, "empath_operator_reconcile_errors_total", reason="PermanentError")
            == failed + 1
        )
        assert await scrape(url, "empath_operator_reconciles_total", result="error") >= 1
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Degraded") == 1

    await passes(refused, timeout=10)

    # Fixed, and every service gets its pods: Degraded is 0 and Ready 1.
    await api.patch(f"{SERVERS}/{NAME}", {"spec": {"trustedNetworks": []}})
    await api.wait(f"{SERVERS}/{NAME}", has_status(3))
    for component in ("ingress", "spool", "delivery", "control"):
        deployment = await api.get(deployment_url(f"{NAME}-{component}"))
        assert deployment is not None
        want = deployment["spec"].get("replicas", 1)
        status = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
        status["observedGeneration"] = deployment["metadata"]["generation"]
        await api.patch(f"{deployment_url(f'{NAME}-{component}')}/status", {"status": status})

    async def ready() -> None:
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Ready") == 1
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Degraded") == 0

    await passes(ready, timeout=10)
