"""What the operator tests share: the emulated cluster's names, the user's view of the API
(`Api`), and builders of MailServers and MailPlugins. The fixtures that start the emulator and
the operator are in `tests/integration/kubernetes/conftest.py`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from kmock import KubernetesEmulator, Request

from empath.operator import crds
from tests import specs, waiting
from tests.emulator import Cluster

NS = "mail"
IMAGE = "registry.example/empath:test"
OPERATOR_TOKEN = "operator-token"
SERVERS = f"/apis/{crds.GROUP}/{crds.VERSION}/namespaces/{NS}/mailservers"
PLUGINS = f"/apis/{crds.GROUP}/{crds.VERSION}/namespaces/{NS}/mailplugins"
COMPONENTS = ("ingress", "spool", "delivery", "control")
# Where kopf keeps the spec it last handled to the end (its handlers done, failed or not).
LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"


def mailserver(name: str = "corp", **spec: Any) -> dict[str, Any]:
    body = specs.mailserver(
        name, relayDomains=["example.com"], trustedNetworks=["10.0.0.0/8"], **spec
    )
    return body


def mailplugin(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "MailPlugin",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels},
        "spec": {"hooks": ["rcpt"], "endpoint": {"url": f"http://{name}.mail.svc/hook"}, **spec},
    }


class Api:
    """What a user (or the cluster) does over the API, and what it sees."""

    def __init__(self, kmock: KubernetesEmulator) -> None:
        self.kmock = kmock
        # The user's edits are kubectl's, a field manager of their own.
        self.http = httpx.AsyncClient(
            base_url=str(kmock.url).rstrip("/"),
            timeout=10,
            headers={"User-Agent": "kubectl/v1.34.0 (linux/amd64)"},
        )

    async def create(self, url: str, obj: dict[str, Any]) -> None:
        (await self.http.post(url, json=obj)).raise_for_status()

    async def patch(self, url: str, change: dict[str, Any]) -> None:
        response = await self.http.patch(
            url, json=change, headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()

    async def delete(self, url: str) -> None:
        (await self.http.delete(url)).raise_for_status()

    async def get(self, url: str) -> dict[str, Any] | None:
        response = await self.http.get(url)
        return None if response.status_code == 404 else dict(response.json())

    async def wait(
        self, url: str, check: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        """The object at `url` once `check` holds for it."""

        async def there() -> dict[str, Any]:
            seen = await self.get(url)
            assert seen is not None, f"{url} does not exist"
            assert check(seen), f"{url} never got there; last seen: {json.dumps(seen)[:2000]}"
            return seen

        return await waiting.passes(there, timeout=timeout)

    async def event(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """An event about the MailServer, as `kubectl get events` lists them (kopf posts
        them in the background)."""

        async def posted() -> dict[str, Any]:
            response = await self.http.get(f"/api/v1/namespaces/{NS}/events")
            found = [e for e in response.json().get("items", []) if check(e)]
            assert found, "no such event was posted"
            return dict(found[0])

        return await waiting.passes(posted, timeout=10)

    async def handled(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The MailServer once the operator is done with a spec `check` holds for (kopf
        records it after the last handler of a change, which then writes no more)."""

        def done(server: dict[str, Any]) -> bool:
            last = (server["metadata"].get("annotations") or {}).get(LAST_HANDLED)
            return last is not None and check(json.loads(last)["spec"])

        return await self.wait(f"{SERVERS}/corp", done)

    def revoke(self, resource: str) -> None:
        """Take from the operator's RBAC every rule about `resource` (an installation whose
        role leaves it out, or a broken RBAC rollout)."""
        assert isinstance(self.kmock, Cluster)
        granted = self.kmock.access[OPERATOR_TOKEN]
        self.kmock.access[OPERATOR_TOKEN] = dataclasses.replace(
            granted, cluster=tuple(r for r in granted.cluster if resource not in r.resources)
        )

    async def pods_ready(self, server: str = "corp") -> None:
        """What the kubelet and the Deployment controller report once every pod of each of
        the MailServer's services runs the current template and is ready."""
        for component in COMPONENTS:
            url = deployment_url(f"{server}-{component}")
            deployment = await self.get(url)
            assert deployment is not None, f"no Deployment {server}-{component}"
            want = deployment["spec"].get("replicas", 1)
            status = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
            status["observedGeneration"] = deployment["metadata"]["generation"]
            await self.patch(f"{url}/status", {"status": status})

    def requests(self, method: str, url: str) -> int:
        """How many `method` requests for `url` the operator has made so far (it logs in with
        its own token; these tests have none)."""
        return len(list(self.kmock[method, url, from_the_operator]))

    def versions(self, resource: str, name: str) -> int:
        return len(self.kmock.objects[resource, NS, name].history)


def from_the_operator(request: Request) -> bool:
    return bool(request.headers.get("Authorization") == f"Bearer {OPERATOR_TOKEN}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


async def degraded(api: Api, reason: str) -> dict[str, Any]:
    """The MailServer once it is Degraded, and that condition, for `reason`."""
    server = await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Degraded").get("status") == "True"
    )
    found = condition(server, "Degraded")
    assert found["reason"] == reason
    return {**server, "degraded": found}


def deployment_url(name: str) -> str:
    return f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"


SELECTOR = {"matchLabels": {"team": "mail"}}


def has_status(generation: int) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: (obj.get("status") or {}).get("observedGeneration") == generation


Operator = Callable[[], Awaitable[None]]
