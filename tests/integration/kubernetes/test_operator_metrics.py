"""The operator's own metrics, as Prometheus scrapes them from its `/metrics`: reconciles by
result, their duration, failures by reason, each MailServer's conditions and ready pods; and
the PodMonitor it makes for a MailServer's pods where the cluster serves PodMonitors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kmock import ResourceInfo
from prometheus_client import parser

from tests import chart_rbac, monitoring
from tests.emulator import Cluster
from tests.operator_harness import (
    COMPONENTS,
    NS,
    OPERATOR_TOKEN,
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


async def samples(url: str, name: str, **labels: str) -> list[float]:
    """The values of the samples `name` with `labels` in the operator's `/metrics`."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(url)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return [
        sample.value
        for family in parser.text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == name and {"mailserver": NAME, **labels}.items() <= sample.labels.items()
    ]


async def scrape(url: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with `labels` in the operator's `/metrics`."""
    return sum(await samples(url, name, **labels))


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
        assert await scrape(url, "empath_operator_service_ready_replicas", service="spool") == 0
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
    await api.pods_ready(NAME)

    async def ready() -> None:
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Ready") == 1
        assert await scrape(url, "empath_operator_service_ready_replicas", service="ingress") == 2
        assert await scrape(url, "empath_operator_service_ready_replicas", service="spool") == 1
        assert await scrape(url, "empath_operator_mailserver_condition", condition="Degraded") == 0

    await passes(ready, timeout=10)

    # Every operator metric the chart's dashboard and alerts name is in this scrape.
    async with httpx.AsyncClient() as http:
        text = (await http.get(url)).text
    served = {
        monitoring.family(sample.name)
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }
    wanted = {name for name in monitoring.queried() if name.startswith("empath_operator_")}
    assert wanted
    assert wanted <= served, sorted(wanted - served)

    # Deleted, the MailServer leaves no gauge behind (its "no ready pods" alert clears).
    await api.delete(f"{SERVERS}/{NAME}")

    async def forgotten() -> None:
        assert await samples(url, "empath_operator_mailserver_condition") == []
        assert await samples(url, "empath_operator_service_ready_replicas") == []

    await passes(forgotten, timeout=10)


PODMONITOR = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/podmonitors/corp"


def podmonitors_on(api: Api) -> None:
    """The Prometheus operator's CRDs installed, and the chart's podMonitor turned on."""
    assert isinstance(api.kmock, Cluster)
    api.kmock.access[OPERATOR_TOKEN] = chart_rbac.access(
        {"observability": {"podMonitor": {"enabled": True}}}
    )
    api.kmock.resources["monitoring.coreos.com/v1/podmonitors"] = ResourceInfo(
        kind="PodMonitor", namespaced=True, verbs={"get", "list", "create", "patch", "delete"}
    )


async def test_a_mailserver_gets_a_podmonitor_where_the_cluster_serves_them(
    api: Api, operator: Any
) -> None:
    podmonitors_on(api)
    await operator(pod_monitors=True)
    await api.create(SERVERS, mailserver())
    await api.wait(f"{SERVERS}/corp", has_status(1))
    monitor = await api.get(PODMONITOR)
    assert monitor is not None
    assert monitor["metadata"]["ownerReferences"][0]["name"] == "corp"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "corp",
        "app.kubernetes.io/managed-by": "empath-operator",
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("health", "/metrics")
    assert {"targetLabel": "mailserver", "replacement": "corp"} in endpoint["relabelings"]
    # The port it names is the one every pod of the MailServer serves /metrics on.
    for component in COMPONENTS:
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment is not None
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "health" in [port["name"] for port in container["ports"]]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


async def test_podmonitors_turned_off_go_and_a_users_of_the_same_name_stays(
    api: Api, operator: Any
) -> None:
    podmonitors_on(api)
    stop = await operator(pod_monitors=True)
    await api.create(SERVERS, mailserver())
    await api.create(SERVERS, mailserver("other"))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    await api.wait(f"{SERVERS}/other", has_status(1))
    assert await api.get(PODMONITOR) is not None
    # A user's own PodMonitor happens to have the name the operator gives other's.
    await api.delete(f"{PODMONITOR.rsplit('/', 1)[0]}/other")
    users = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "other", "namespace": NS, "labels": {"team": "mail"}},
        "spec": {"selector": {"matchLabels": {"team": "mail"}}},
    }
    await api.create(PODMONITOR.rsplit("/", 1)[0], users)

    # Turned off (`helm upgrade --set observability.podMonitor.enabled=false` restarts the
    # operator with the new setting and the chart's new rules).
    await stop()
    api.kmock.access[OPERATOR_TOKEN] = chart_rbac.access()
    await operator(pod_monitors=False)

    async def gone() -> None:
        assert await api.get(PODMONITOR) is None

    await passes(gone, timeout=20)
    mine = await api.get(f"{PODMONITOR.rsplit('/', 1)[0]}/other")
    assert mine is not None
    assert mine["metadata"]["labels"] == {"team": "mail"}
    server = await api.get(f"{SERVERS}/corp")
    assert server
    assert condition(server, "Degraded")["status"] == "False"


async def test_without_the_prometheus_operator_a_mailserver_runs_without_a_podmonitor(
    api: Api, operator: Any
) -> None:
    await operator(pod_monitors=True)
    await api.create(SERVERS, mailserver())
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    assert condition(server, "Degraded")["status"] == "False"
    assert await api.get(PODMONITOR) is None
    assert api.requests("PATCH", PODMONITOR) == 0
