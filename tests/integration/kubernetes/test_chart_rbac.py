"""The chart's RBAC against every call the operator makes: the emulator refuses what the rules
do not allow (tests/emulator.py), and records each call; after a run through everything the
operator does, each rule granted must have been used. Both install modes are checked: the
operator of one set of namespaces (recommended) and of the whole cluster.
"""

from __future__ import annotations

from typing import Any

import pytest
from kmock import ResourceInfo

from tests import chart_rbac, rbac
from tests.emulator import Cluster
from tests.operator_harness import (
    NS,
    OPERATOR_TOKEN,
    PLUGINS,
    SERVERS,
    Api,
    deployment_url,
    has_status,
    mailplugin,
    mailserver,
)

pytestmark = pytest.mark.kmock(cls=Cluster)


OWNED = "app.kubernetes.io/managed-by=empath-operator"
SERVER = "empath.io/mailserver"


def covered(grant: tuple[str, str, str, str | None], calls: set[rbac.Call]) -> bool:
    verb, group, resource, where = grant
    return any(
        (c.verb, c.group, c.resource) == (verb, group, resource)
        and (where is None or c.namespace == where)
        for c in calls
    )


async def everything_the_operator_does(api: Api) -> None:
    """Plugins, a server, a plugin change, a deleted object, both autoscaler switches, and
    the server's deletion; and, with the Prometheus operator installed, the removal of a
    PodMonitor left from when they were turned on."""
    api.kmock.resources["monitoring.coreos.com/v1/podmonitors"] = ResourceInfo(
        kind="PodMonitor", namespaced=True, verbs={"get", "create", "patch", "delete"}
    )
    await api.create(
        f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/podmonitors",
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {
                "name": "corp",
                "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "empath-operator", SERVER: "corp"},
            },
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": "corp"}}},
        },
    )
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}))
    await api.create(SERVERS, mailserver(pluginSelector={"matchLabels": {"team": "mail"}}))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    await api.patch(f"{PLUGINS}/spam-check", {"spec": {"timeoutSeconds": 2}})
    await api.delete(deployment_url("corp-spool"))
    await api.wait(deployment_url("corp-spool"), lambda o: True)
    api.kmock.resources["keda.sh/v1alpha1/scaledobjects"] = ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs={"get", "create", "patch", "delete"}
    )
    await api.patch(f"{SERVERS}/corp", {"spec": {"autoscaling": {"maxReplicas": 20}}})
    await api.wait(f"{SERVERS}/corp", lambda o: o.get("status", {}).get("autoscaler") == "keda")
    await api.patch(
        f"{SERVERS}/corp", {"spec": {"nats": {"url": None, "urlSecret": {"name": "nats"}}}}
    )
    await api.wait(f"{SERVERS}/corp", lambda o: o.get("status", {}).get("autoscaler") == "hpa")
    await api.delete(f"{SERVERS}/corp")


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [({"operator": {"watchNamespaces": [NS]}}, [NS]), ({}, [])],
    ids=["watched-namespaces", "cluster-wide"],
)
async def test_the_chart_grants_exactly_the_calls_the_operator_makes(
    api: Api, operator: Any, values: dict[str, Any], namespaces: list[str]
) -> None:
    assert isinstance(api.kmock, Cluster)
    access = api.kmock.access[OPERATOR_TOKEN] = chart_rbac.access(values)
    stop = await operator(namespaces=namespaces)
    await everything_the_operator_does(api)
    await stop()
    calls = api.kmock.calls[OPERATOR_TOKEN]
    refused = sorted(str(c) for c in calls if not access.allows(c))
    assert not refused, refused
    unused = sorted(str(g) for g in access.grants() if not covered(g, calls))
    assert not unused, f"granted and never used: {unused}"


async def test_the_operator_lists_and_watches_only_its_own_objects(api: Api, operator: Any) -> None:
    """The label filter is in the requests: the API server sends only the operator's own
    ConfigMaps, Services, Deployments, PDBs and HPAs, not every one in the cluster."""
    assert isinstance(api.kmock, Cluster)
    api.kmock.access[OPERATOR_TOKEN] = chart_rbac.access({"operator": {"watchNamespaces": [NS]}})
    await operator(namespaces=[NS])
    await api.create(SERVERS, mailserver())
    await api.wait(f"{SERVERS}/corp", has_status(1))
    for resource in (
        "/api/v1/namespaces/mail/configmaps",
        "/api/v1/namespaces/mail/services",
        "/apis/apps/v1/namespaces/mail/deployments",
        "/apis/policy/v1/namespaces/mail/poddisruptionbudgets",
        "/apis/autoscaling/v2/namespaces/mail/horizontalpodautoscalers",
    ):
        requests = [r for r in api.kmock if r.method == "GET" and r.url.path == resource]
        assert requests, resource
        for request in requests:
            assert request.params.get("labelSelector") == OWNED, (resource, request.params)
