"""What a MailServer's status says: its conditions, its services' replicas, its endpoint.

The conditions follow Kubernetes' conventions: `Ready` (every service has a ready pod),
`Progressing` (a rollout is not finished) and `Degraded` (the last reconcile failed), each
with a `lastTransitionTime` that moves only when its status does. Ready and Progressing are
derived from the Deployments as read, by pure functions, so the rules can be read (and
tested) apart from the API calls that fetch them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from empath.operator import kube, metadata, metrics, services, workloads


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    *,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """`conditions` with `kind` set; its transition time moves only when its status does."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed_at = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == value and previous.get("lastTransitionTime")
        else _now()
    )
    condition = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": changed_at,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != kind] + [condition]


def condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The condition `kind`, or an empty one."""
    return next((c for c in conditions if c.get("type") == kind), {})


def rollout(
    deployments: Mapping[str, Mapping[str, Any] | None],
    conditions: list[dict[str, Any]],
    generation: int | None,
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """The replicas of each service, and Progressing and Ready from `deployments` (by
    component; None for one that is missing). A Deployment is still rolling out until its
    controller has seen its latest template and every wanted replica is updated and ready."""
    replicas: dict[str, dict[str, int]] = {}
    waiting: list[str] = []
    for component in metadata.COMPONENTS:
        deployment = deployments.get(component)
        spec = (deployment or {}).get("spec") or {}
        state = (deployment or {}).get("status") or {}
        wanted = int(spec.get("replicas", state.get("replicas", 1)))
        ready = int(state.get("readyReplicas") or 0)
        updated = int(state.get("updatedReplicas", ready) or 0)
        replicas[component] = {"replicas": wanted, "readyReplicas": ready}
        generation_seen = state.get("observedGeneration", 0) >= (deployment or {}).get(
            "metadata", {}
        ).get("generation", 0)
        if deployment is None or ready < wanted or updated < wanted or not generation_seen:
            waiting.append(f"{component} {ready}/{wanted}")
    degraded = condition(conditions, "Degraded").get("status") == "True"
    if waiting:
        conditions = set_condition(
            conditions,
            "Progressing",
            status=True,
            reason="RollingOut",
            message="waiting for " + ", ".join(waiting),
            generation=generation,
        )
    else:
        conditions = set_condition(
            conditions,
            "Progressing",
            status=False,
            reason="Complete",
            message="every service is up to date",
            generation=generation,
        )
    missing = [c for c in metadata.COMPONENTS if replicas[c]["readyReplicas"] == 0]
    if degraded:
        reason, message = "Degraded", "see the Degraded condition"
    elif not missing:
        reason, message = "Available", "every service has ready pods"
    else:
        reason, message = "Unavailable", "no ready pods: " + ", ".join(missing)
    conditions = set_condition(
        conditions,
        "Ready",
        status=not degraded and not missing,
        reason=reason,
        message=message,
        generation=generation,
    )
    return replicas, conditions


def endpoint(service: Mapping[str, Any] | None, *, namespace: str, name: str) -> str:
    """Where clients send mail: the load balancer's address, else the node port, else the
    Service's cluster name (saying that there is no external address yet)."""
    service = service or {}
    ports = (service.get("spec") or {}).get("ports") or [{}]
    smtp = next((p for p in ports if p.get("name") == "smtp"), ports[0])
    for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        host = ingress.get("ip") or ingress.get("hostname")
        if host:
            return f"{host}:{smtp.get('port', 25)}"
    if (service.get("spec") or {}).get("type") == "NodePort" and smtp.get("nodePort"):
        return f"<node>:{smtp['nodePort']}"
    inside = f"{services.smtp_name(name)}.{namespace}.svc"
    return f"{inside}:{smtp.get('port', 25)} (no external address yet)"


async def observe(
    cluster: kube.Cluster,
    body: Mapping[str, Any],
    conditions: list[dict[str, Any]],
    generation: int | None,
) -> dict[str, Any]:
    """Ready replicas of each service, the SMTP endpoint, and Ready/Progressing from them."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    deployments = {
        component: await cluster.get(
            kube.path("apps/v1", "Deployment", namespace, workloads.name(name, component))
        )
        for component in metadata.COMPONENTS
    }
    replicas, conditions = rollout(deployments, conditions, generation)
    service = await cluster.get(kube.path("v1", "Service", namespace, services.smtp_name(name)))
    return {
        "services": replicas,
        "endpoint": endpoint(service, namespace=namespace, name=name),
        "conditions": conditions,
    }


async def write(
    cluster: kube.Cluster,
    body: Mapping[str, Any],
    status: dict[str, Any],
    *,
    only_as_read: bool = False,
) -> None:
    """Patch the status only where it differs: a status that says the same is not rewritten.
    Its conditions and ready pods are reported as metrics either way. `only_as_read`: only
    if the MailServer is still the version `body` is (else `kube.ApiError` 409)."""
    current = body.get("status") or {}
    meta = body["metadata"]
    if not all(current.get(key) == value for key, value in status.items()):
        await cluster.patch_status(
            kube.server_path(meta["namespace"], meta["name"]),
            status,
            resource_version=meta.get("resourceVersion") if only_as_read else None,
        )
    if "conditions" in status:
        metrics.report_conditions(body, status["conditions"])
    if "services" in status:
        metrics.report_services(body, status["services"])


# How many times `refresh` reads a MailServer again that was written while it looked.
REFRESH_ATTEMPTS = 5


async def refresh(cluster: kube.Cluster, body: Mapping[str, Any] | None) -> None:
    """Bring a MailServer's replicas, endpoint, Ready and Progressing up to date with its
    objects, keeping what its last reconcile said (Degraded, observedGeneration). `body` is
    the MailServer as just read. The write is conditional on the version read: a reconcile
    that wrote a fresh `Degraded` while this looked at the Deployments is read again, never
    overwritten with the older read."""
    for attempt in range(REFRESH_ATTEMPTS):
        if attempt and body is not None:
            meta = body["metadata"]
            body = await cluster.get(kube.server_path(meta["namespace"], meta["name"]))
        if body is None or not body.get("status"):
            return  # gone, or not reconciled yet: its reconcile writes the first status
        found = body["status"]
        conditions = list(found.get("conditions") or [])
        observed = await observe(cluster, body, conditions, found.get("observedGeneration"))
        try:
            await write(cluster, body, observed, only_as_read=True)
        except kube.ApiError as error:
            if error.status != 409:
                raise
            continue
        return
