"""kopf handlers: MailServers are reconciled on create, update and resume, and again when a
MailPlugin they select changes or an object they own is deleted; their Deployments and
Services report back into their status. Everything applied is compared first, so repeating
a reconcile writes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import logging
import secrets
from collections.abc import Mapping
from typing import Any, cast

import kopf

from empath.core import kubeconfig, kubenames
from empath.operator import crds, kube, render
from empath.operator.kube import ApiError, Cluster, path

KEDA = ("keda.sh/v1alpha1", "scaledobjects")


@dataclasses.dataclass
class State:
    """What every handler gets, as `memo.state`."""

    cluster: Cluster
    options: render.Options


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
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


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def server_path(namespace: str, name: str) -> str:
    return path(f"{crds.GROUP}/{crds.VERSION}", "MailServer", namespace, name)


async def _write_status(cluster: Cluster, body: Mapping[str, Any], status: dict[str, Any]) -> None:
    """Patch the status only where it differs: a status that says the same is not rewritten."""
    current = body.get("status") or {}
    if all(current.get(key) == value for key, value in status.items()):
        return
    meta = body["metadata"]
    await cluster.patch_status(server_path(meta["namespace"], meta["name"]), status)


async def ensure_token(cluster: Cluster, secret: dict[str, Any]) -> bool:
    """The control token Secret: made once, never rewritten (clients hold the token)."""
    url = path("v1", "Secret", secret["metadata"]["namespace"], secret["metadata"]["name"])
    if await cluster.get(url) is not None:
        return False
    token = secrets.token_urlsafe(32)
    data = {kubenames.CONTROL_TOKEN_KEY: base64.b64encode(token.encode()).decode()}
    try:
        await cluster.create({**secret, "data": data})
    except ApiError as error:
        if error.status == 409:  # a concurrent reconcile made it first: that token stands
            return False
        raise
    return True


def selected_plugins(
    body: Mapping[str, Any], plugins: list[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    chooser = (body.get("spec") or {}).get("pluginSelector")
    return [p for p in plugins if render.selects(chooser, p["metadata"].get("labels") or {})]


async def reconcile(
    body: Mapping[str, Any], plugins: list[Mapping[str, Any]], state: State, logger: Any
) -> None:
    """Apply every object of the MailServer; record the outcome in its status and events."""
    cluster = state.cluster
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    # Only the operator's own fields: `status.kopf` is kopf's, written by kopf alone.
    conditions = list((body.get("status") or {}).get("conditions") or [])
    keda = await cluster.serves(*KEDA)
    options = dataclasses.replace(state.options, keda=keda)
    try:
        rendered = render.render(body, selected_plugins(body, plugins), options)
    except render.InvalidSpec as error:
        conditions = set_condition(conditions, "Degraded", True, "InvalidSpec", str(error), None)
        conditions = set_condition(
            conditions, "Ready", False, "InvalidSpec", "the spec cannot be run", None
        )
        await _write_status(cluster, body, {"conditions": conditions})
        kopf.warn(cast(kopf.Body, body), reason="InvalidSpec", message=f"nothing changed: {error}")
        raise kopf.PermanentError(f"invalid spec, nothing changed: {error}") from None

    changed: list[str] = []
    try:
        if await ensure_token(cluster, rendered.token_secret):
            changed.append(f"Secret/{kubenames.control_token_secret(name)}")
        for obj in rendered.objects:
            if await cluster.apply(obj):
                changed.append(f"{obj['kind']}/{obj['metadata']['name']}")
        changed += await _retire_autoscalers(cluster, namespace, name, rendered.autoscaler, keda)
    except ApiError as error:
        conditions = set_condition(conditions, "Degraded", True, "ApplyFailed", str(error), None)
        await _write_status(cluster, body, {"conditions": conditions})
        kopf.warn(cast(kopf.Body, body), reason="ApplyFailed", message=str(error))
        raise kopf.TemporaryError(f"applying failed, will retry: {error}", delay=15) from error

    if changed:
        logger.info("applied %s", ", ".join(changed))
        kopf.info(
            cast(kopf.Body, body),
            reason="Applied",
            message=f"{len(changed)} changed: {', '.join(changed)}",
        )
    conditions = set_condition(
        conditions, "Degraded", False, "Reconciled", "every object applied", generation
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "plugins": rendered.plugins,
        "autoscaler": rendered.autoscaler,
        **await observe(cluster, body, conditions, generation),
    }
    await _write_status(cluster, body, status)


async def _retire_autoscalers(
    cluster: Cluster, namespace: str, name: str, chosen: str, keda: bool
) -> list[str]:
    """Remove the autoscaler that is no longer the chosen one (KEDA installed later, say)."""
    retired = []
    if chosen != "hpa" and await cluster.delete(
        path("autoscaling/v2", "HorizontalPodAutoscaler", namespace, f"{name}-delivery")
    ):
        retired.append(f"HorizontalPodAutoscaler/{name}-delivery (removed)")
    if (
        chosen != "keda"
        and keda
        and await cluster.delete(path(KEDA[0], "ScaledObject", namespace, f"{name}-delivery"))
    ):
        retired.append(f"ScaledObject/{name}-delivery (removed)")
    return retired


async def observe(
    cluster: Cluster,
    body: Mapping[str, Any],
    conditions: list[dict[str, Any]],
    generation: int | None,
) -> dict[str, Any]:
    """Ready replicas of each service, the SMTP endpoint, and Ready/Progressing from them."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    services: dict[str, dict[str, int]] = {}
    waiting: list[str] = []
    for component in render.COMPONENTS:
        deployment = await cluster.get(
            path("apps/v1", "Deployment", namespace, f"{name}-{component}")
        )
        spec = (deployment or {}).get("spec") or {}
        state = (deployment or {}).get("status") or {}
        wanted = int(spec.get("replicas", state.get("replicas", 1)))
        ready = int(state.get("readyReplicas") or 0)
        updated = int(state.get("updatedReplicas", ready) or 0)
        services[component] = {"replicas": wanted, "readyReplicas": ready}
        generation_seen = state.get("observedGeneration", 0) >= (deployment or {}).get(
            "metadata", {}
        ).get("generation", 0)
        if deployment is None or ready < wanted or updated < wanted or not generation_seen:
            waiting.append(f"{component} {ready}/{wanted}")
    degraded = _condition({"conditions": conditions}, "Degraded").get("status") == "True"
    if waiting:
        progress = "waiting for " + ", ".join(waiting)
        conditions = set_condition(
            conditions, "Progressing", True, "RollingOut", progress, generation
        )
    else:
        conditions = set_condition(
            conditions, "Progressing", False, "Complete", "every service is up to date", generation
        )
    available = all(services[c]["readyReplicas"] > 0 for c in render.COMPONENTS)
    if degraded:
        conditions = set_condition(
            conditions, "Ready", False, "Degraded", "see the Degraded condition", generation
        )
    elif available:
        conditions = set_condition(
            conditions, "Ready", True, "Available", "every service has ready pods", generation
        )
    else:
        missing = [c for c in render.COMPONENTS if services[c]["readyReplicas"] == 0]
        conditions = set_condition(
            conditions,
            "Ready",
            False,
            "Unavailable",
            "no ready pods: " + ", ".join(missing),
            generation,
        )
    return {
        "services": services,
        "endpoint": await _endpoint(cluster, namespace, name),
        "conditions": conditions,
    }


async def _endpoint(cluster: Cluster, namespace: str, name: str) -> str:
    service = await cluster.get(path("v1", "Service", namespace, f"{name}-smtp")) or {}
    ports = (service.get("spec") or {}).get("ports") or [{}]
    smtp = next((p for p in ports if p.get("name") == "smtp"), ports[0])
    for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        host = ingress.get("ip") or ingress.get("hostname")
        if host:
            return f"{host}:{smtp.get('port', 25)}"
    if (service.get("spec") or {}).get("type") == "NodePort" and smtp.get("nodePort"):
        return f"<node>:{smtp['nodePort']}"
    return f"{name}-smtp.{namespace}.svc:{smtp.get('port', 25)} (no external address yet)"


# -- kopf registrations --------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf logs in with the operator's own credentials (asked again when they expire)."""
    found = kube.configuration()
    return kopf.ConnectionInfo(
        server=found.host,
        ca_path=found.ssl_ca_cert,
        insecure=not found.verify_ssl,
        scheme="Bearer" if kubeconfig.bearer(found) else None,
        token=kubeconfig.bearer(found),
        certificate_path=found.cert_file,
        private_key_path=found.key_file,
    )


@kopf.index(crds.GROUP, crds.VERSION, crds.MAILPLUGINS)
async def plugins_index(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[str, dict[str, Any]]:
    return {str(namespace): {"metadata": dict(body.metadata), "spec": dict(body.spec)}}


@kopf.index(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
async def servers_index(namespace: str | None, name: str, **_: Any) -> dict[str, str]:
    return {str(namespace): name}


def _indexed(kwargs: Mapping[str, Any], index: str, namespace: str) -> list[Any]:
    """The entries of a kopf index (handed to handlers as a keyword named after it)."""
    found: kopf.Index[str, Any] = kwargs[index]
    return list(found.get(namespace, []))


@kopf.on.resume(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
@kopf.on.create(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
@kopf.on.update(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
async def mailserver_changed(
    body: kopf.Body, namespace: str | None, memo: Any, logger: Any, **kwargs: Any
) -> None:
    plugins = _indexed(kwargs, "plugins_index", str(namespace))
    await reconcile(_plain(body), plugins, memo.state, logger)


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MAILPLUGINS)
async def mailplugin_changed(
    type: str, namespace: str | None, name: str, memo: Any, logger: Any, **kwargs: Any
) -> None:
    """A MailPlugin came, changed or went: reconcile the MailServers whose render it changes."""
    if type is None:  # the initial listing: the resume handlers see it all
        return
    cluster: Cluster = memo.state.cluster
    plugins = _indexed(kwargs, "plugins_index", str(namespace))
    for server in sorted(set(_indexed(kwargs, "servers_index", str(namespace)))):
        body = await cluster.get(server_path(str(namespace), server))
        if body is None:
            continue
        now = [p["metadata"]["name"] for p in selected_plugins(body, plugins)]
        if now != list((body.get("status") or {}).get("plugins") or []) or name in now:
            logger.info("MailPlugin %s changed: reconciling MailServer %s", name, server)
            try:
                await reconcile(body, plugins, memo.state, logger)
            except kopf.PermanentError as error:
                logger.warning("MailServer %s: %s", server, error)


OWNED = {"app.kubernetes.io/managed-by": render.MANAGED_BY}


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("v1", "services", labels=OWNED)
@kopf.on.event("v1", "configmaps", labels=OWNED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED)
async def child_changed(
    type: str | None,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    memo: Any,
    logger: Any,
    **kwargs: Any,
) -> None:
    """An object of a MailServer changed: refresh the MailServer's status. One deleted by
    hand is made again at once. (The control token Secret is not watched: that would take
    the right to list every Secret. A deleted token is made again at the next reconcile.)"""
    server = labels.get(render.SERVER_LABEL)
    if not server:
        return
    cluster: Cluster = memo.state.cluster
    body = await cluster.get(server_path(str(namespace), server))
    if body is None or not body.get("status"):
        return  # gone, or not reconciled yet: its own handler writes the first status
    if type == "DELETED" and not body["metadata"].get("deletionTimestamp"):
        logger.warning("%s of MailServer %s was deleted: making it again", name, server)
        plugins = _indexed(kwargs, "plugins_index", str(namespace))
        with contextlib.suppress(kopf.PermanentError):
            await reconcile(body, plugins, memo.state, logger)
        return
    status = body["status"]
    generation = status.get("observedGeneration")
    conditions = list(status.get("conditions") or [])
    await _write_status(cluster, body, await observe(cluster, body, conditions, generation))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", f"{crds.GROUP}/{crds.VERSION}"),
        "kind": body.get("kind", "MailServer"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
