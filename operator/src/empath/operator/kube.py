"""The few Kubernetes API calls the operator makes, over httpx.

Credentials come from the kubernetes package's loaders (in-cluster service account, else
the kubeconfig), the same ones kopf logs in with.

Every object the operator owns is written with server-side apply under one field manager
(`empath-operator`), creation included, and with `force`: the operator owns every field it
renders. The API server then removes what this manager applied before and no longer does (a
setting dropped from the spec leaves the cluster). An object is applied only when what the
operator renders changed since it last applied it (a hash of the applied object, kept on it
as an annotation) or the live object no longer says it (a hand edit): a resync or a restart
writes nothing. One field has a second manager: the replicas of a Deployment an autoscaler
takes over, handed over as the Kubernetes documentation describes ("Transferring ownership").
An object of the same name that is not the operator's (a user's) is never taken over: the
MailServer is Degraded, saying which, until it is removed or renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator
from typing import Any

import httpx

from empath.core import errors, kubeconfig
from empath.operator import crds

FIELD_MANAGER = "empath-operator"
# Keeps `spec.replicas` of a Deployment the operator stops setting (an autoscaler takes over):
# owned by no manager any more, the API server would remove it and default it to 1 replica.
REPLICAS_MANAGER = "empath-operator-replicas"
# On every applied object: the hash of what this manager last applied to it.
APPLIED_HASH = "empath.io/applied-hash"
APPLY_PATCH = "application/apply-patch+yaml"
PLURALS = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "PodMonitor": "podmonitors",
    "MailServer": "mailservers",
    "MailPlugin": "mailplugins",
    "CustomResourceDefinition": "customresourcedefinitions",
}


class ApiError(errors.TemporaryError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def ours(live: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Whether the live object is the one the operator renders as `obj`: owned by the same
    MailServer, or applied by the operator before (its hash annotation; a MailServer deleted
    and made again takes its objects over before the garbage collector removes them). An
    object rendered without an owner is not checked."""
    wanted = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
    if not wanted:
        return True
    meta = live.get("metadata") or {}
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or []}
    return bool(owners & wanted) or APPLIED_HASH in (meta.get("annotations") or {})


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """The URL of an object (or its collection); `namespace` None: a cluster-wide kind."""
    root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    where = f"{root}/namespaces/{namespace}" if namespace else root
    found = f"{where}/{PLURALS[kind]}"
    return f"{found}/{name}" if name else found


def server_path(namespace: str, name: str) -> str:
    """A MailServer, where its status is written and where the handlers read it again."""
    return path(f"{crds.GROUP}/{crds.VERSION}", "MailServer", namespace, name)


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def applied_hash(obj: dict[str, Any]) -> str:
    """What `obj` says, in a few characters: the same object, the same hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as it is applied: annotated with its own hash."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: applied_hash(obj)}
    return {**obj, "metadata": meta}


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` already says everything `desired` says (the server adds defaults)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


class _KubeAuth(httpx.Auth):
    """The kubernetes package's credentials, asked for each request: in a pod, the service
    account token is rotated on disk and the loader's refresh hook reads the new one."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = kubeconfig.bearer(self.configuration)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def configuration() -> Any:
    """The kubernetes package's configuration: in a pod, its service account; else the
    kubeconfig (`KUBECONFIG`, read now rather than when the package was imported)."""
    from kubernetes import client as kclient
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    found = kclient.Configuration()
    try:
        config.load_incluster_config(client_configuration=found)
    except ConfigException:
        try:
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=found
            )
        except (ConfigException, OSError) as error:
            raise errors.ConfigurationError(f"no Kubernetes credentials: {error}") from None
    return found


def client(found: Any) -> httpx.AsyncClient:
    """An httpx client with the credentials of `found` (a kubernetes Configuration)."""
    verify, cert = kubeconfig.tls(found)
    return httpx.AsyncClient(
        base_url=found.host.rstrip("/"),
        auth=_KubeAuth(found),
        verify=verify,
        cert=cert,
        timeout=30,
    )


class Cluster:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(0, f"{method} {url}: {error}") from error
        if response.status_code >= 400 and response.status_code != 404:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {url}: {message.strip()[:300]}")
        return response

    async def get(self, url: str) -> dict[str, Any] | None:
        response = await self._call("GET", url)
        return None if response.status_code == 404 else dict(response.json())

    async def list(self, url: str) -> list[dict[str, Any]]:
        """The objects of a collection (none if the API does not serve it)."""
        response = await self._call("GET", url)
        return [] if response.status_code == 404 else list(response.json().get("items", []))

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create `obj`; None if it exists already (nothing is read first, nor changed)."""
        url = object_path(obj).rsplit("/", 1)[0]
        try:
            response = await self._call(
                "POST", url, params={"fieldManager": FIELD_MANAGER}, json=obj
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        if response.status_code == 404:
            raise ApiError(404, f"POST {url}: no such resource")
        return dict(response.json())

    async def apply(self, obj: dict[str, Any]) -> bool:
        """Make the live object say what `obj` says, and no more of what this manager said
        before; False (and nothing written) when it already did."""
        url = object_path(obj)
        desired = with_hash(obj)
        live = await self.get(url)
        if live is not None:
            if not ours(live, obj):
                raise ApiError(
                    409,
                    f"{obj['kind']} {obj['metadata']['name']} exists and is not this "
                    "MailServer's (someone else's object of the same name): remove or rename "
                    "it, and the operator makes its own",
                )
            last = (live.get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH)
            if last == applied_hash(obj) and contains(live, desired):
                return False  # as this manager last applied it, and not edited since
            await self._keep_replicas(obj, live)
        response = await self._call(
            "PATCH",
            url,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            headers={"Content-Type": APPLY_PATCH},
            json=desired,
        )
        if response.status_code == 404:
            raise ApiError(404, f"PATCH {url}: no such resource")
        return True

    async def _keep_replicas(self, obj: dict[str, Any], live: dict[str, Any]) -> None:
        """A Deployment whose replicas the operator no longer sets (autoscaling turned on)
        keeps the number it runs: a second manager applies the live value first, so the
        operator's apply without it prunes nothing (the autoscaler changes it from there).
        A conflict means another manager owns it already: nothing to keep then."""
        replicas = (live.get("spec") or {}).get("replicas")
        if obj["kind"] != "Deployment" or "replicas" in obj["spec"] or replicas is None:
            return
        meta = obj["metadata"]
        keep = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        try:
            await self._call(
                "PATCH",
                object_path(obj),
                params={"fieldManager": REPLICAS_MANAGER},
                headers={"Content-Type": APPLY_PATCH},
                json=keep,
            )
        except ApiError as error:
            if error.status != 409:
                raise

    async def delete(self, url: str) -> bool:
        response = await self._call("DELETE", url)
        return response.status_code != 404

    async def patch_status(
        self, url: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> None:
        """Merge `status` into the object's; with `resource_version`, only into that version
        of it (409 when it was written since: read it again)."""
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        await self._call(
            "PATCH",
            f"{url}/status",
            headers={"Content-Type": "application/merge-patch+json"},
            json=patch,
        )

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API serves `plural` in `api_version` (KEDA's CRDs, say)."""
        response = await self._call("GET", f"/apis/{api_version}")
        if response.status_code == 404:
            return False
        return any(item.get("name") == plural for item in response.json().get("resources", []))
