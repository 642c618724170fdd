"""Fixtures of the Kubernetes tests: the API emulator as `helm install` left it, and the
operator started in a thread of its own (as it has a process of its own in a pod)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator, ResourceInfo

from empath.operator import crds, main
from tests import chart_rbac
from tests.emulator import Cluster
from tests.operator_harness import IMAGE, NS, OPERATOR_TOKEN, Api
from tests.servers import free_port, kubeconfig


@pytest.fixture
async def api(kmock: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    kmock.resources.load_bundled()
    for crd in crds.definitions():
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        kmock.resources[f"{crd['spec']['group']}/{version['name']}/{names['plural']}"] = (
            ResourceInfo(
                kind=names["kind"],
                singular=names["singular"],
                namespaced=crd["spec"]["scope"] == "Namespaced",
                shortnames=set(names.get("shortNames", [])),
                subresources=set(version.get("subresources", {})),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )
        )
    config = kubeconfig(
        tmp_path / "kubeconfig",
        str(kmock.url),
        users={"operator": OPERATOR_TOKEN},
        contexts={"test": {"user": "operator"}},
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    # The operator may do what the chart's RBAC lets it do, and no more.
    assert isinstance(kmock, Cluster)
    kmock.access[OPERATOR_TOKEN] = chart_rbac.access()
    # The API server checks the CRDs' CEL rules on every write of a MailServer or MailPlugin.
    kmock.schemas[crds.MAILSERVERS] = (crds.schema(crds.MAILSERVERS), crds.with_defaults)
    kmock.schemas[crds.MAILPLUGINS] = (crds.schema(crds.MAILPLUGINS), crds.with_defaults)
    found = Api(kmock)
    # What `helm install` made: the chart's CRDs (Helm's own field manager).
    for crd in crds.definitions():
        await found.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    await found.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    )
    yield found  # type: ignore[misc]
    await found.http.aclose()


@pytest.fixture
async def operator(
    api: Api,
) -> AsyncIterator[Callable[[], Awaitable[Callable[[], Awaitable[None]]]]]:
    """Start the operator; the returned function stops it (as a pod is stopped).

    kopf cancels every task of its event loop on the way out, so it gets a thread and a loop
    of its own, as it has a process of its own in a pod."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    async def start(**options: Any) -> Callable[[], Awaitable[None]]:
        settings = main.OperatorSettings(
            **{
                "image": IMAGE,
                "health_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
                "otlp_endpoint": "http://otel-collector.observability.svc:4318",
                **options,
            }
        )
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=lambda: asyncio.run(main.run(settings, stop=stop, ready=ready)),
            name=f"operator-{len(running)}",
            daemon=True,
        )
        thread.start()
        running.append((stop, thread))
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"

        async def halt() -> None:
            stop.set()
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive(), "the operator did not stop"

        return halt

    yield start
    for stop, thread in running:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
