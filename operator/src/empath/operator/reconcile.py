"""One reconcile of a MailServer: render it, apply what differs, and say so in its status.

Everything applied is compared first (`kube.Cluster.apply`), so repeating a reconcile writes
nothing. The autoscaler that is no longer chosen goes before its successor comes: KEDA's
admission webhook refuses a ScaledObject for a Deployment an HPA scales, and two autoscalers
of one Deployment would fight. A spec the services would refuse changes nothing and says why
(a permanent error); an API that refuses an object is tried again later (a temporary one).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf

from empath.core import kubenames, signing
from empath.operator import (
    autoscaling,
    configmap,
    kube,
    metadata,
    monitors,
    plugincalls,
    plugins,
    render,
    status,
    workloads,
)


async def ensure_token(
    cluster: kube.Cluster, secret: dict[str, Any], token: str | None = None
) -> bool:
    """The control token Secret: made once, never rewritten (clients hold the token). It is
    created without being read first (409: it exists, that token stands), so the operator
    needs no right to read Secrets. `token`: the one derived from the operator key, which
    the operator can call control with (`plugincalls`); without, a random one."""
    token = token or secrets.token_urlsafe(32)
    data = {kubenames.CONTROL_TOKEN_KEY: base64.b64encode(token.encode()).decode()}
    return await cluster.create({**secret, "data": data}) is not None


async def ensure_event_keys(cluster: kube.Cluster, secret: dict[str, Any]) -> bool:
    """The event keys Secret of ingress and the spool: made once, never rewritten (rotating
    the keys is editing it, README "Security"), created without being read first, like the
    token's."""
    data = {name: base64.b64encode(value).decode() for name, value in signing.new_keys().items()}
    return await cluster.create({**secret, "data": data}) is not None


async def retire_autoscalers(
    cluster: kube.Cluster, namespace: str, name: str, *, chosen: str, keda: bool
) -> list[str]:
    """Remove the autoscaler that is no longer the chosen one (KEDA installed later, say)."""
    delivery = workloads.name(name, "delivery")
    retired = []
    if chosen != "hpa" and await cluster.delete(
        kube.path("autoscaling/v2", "HorizontalPodAutoscaler", namespace, delivery)
    ):
        retired.append(f"HorizontalPodAutoscaler/{delivery} (removed)")
    if (
        chosen != "keda"
        and keda
        and await cluster.delete(
            kube.path(autoscaling.KEDA[0], "ScaledObject", namespace, delivery)
        )
    ):
        retired.append(f"ScaledObject/{delivery} (removed)")
    return retired


async def retire_pod_monitor(cluster: kube.Cluster, namespace: str, name: str) -> list[str]:
    """Remove the MailServer's PodMonitor, made while the installation asked for them: only
    the one the operator made (by its labels), not a user's of the same name."""
    url = kube.path(monitors.POD_MONITORS[0], "PodMonitor", namespace, name)
    found = await cluster.get(url)
    labels = ((found or {}).get("metadata") or {}).get("labels") or {}
    if (
        labels.get(metadata.SERVER_LABEL) != name
        or labels.get(metadata.MANAGED_BY_LABEL) != metadata.MANAGED_BY
    ):
        return []
    return [f"PodMonitor/{name} (removed)"] if await cluster.delete(url) else []


async def reconcile(
    body: Mapping[str, Any],
    mailplugins: Sequence[Mapping[str, Any]],
    *,
    cluster: kube.Cluster,
    options: render.Options,
    logger: Any,
    pod_monitors_checked: set[tuple[str, str]] | None = None,
) -> None:
    """Apply every object of the MailServer; record the outcome in its status and events.
    `mailplugins` are those of its namespace; it uses the ones it selects. Without PodMonitors
    asked for, a PodMonitor made while they were is removed: once per MailServer in
    `pod_monitors_checked` (turning them off restarts the operator with the new setting)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    # Only the operator's own fields: `status.kopf` is kopf's, written by kopf alone.
    conditions = list((body.get("status") or {}).get("conditions") or [])
    keda = await cluster.serves(*autoscaling.KEDA)
    pod_monitor = options.pod_monitor and await cluster.serves(*monitors.POD_MONITORS)
    checked = pod_monitors_checked if pod_monitors_checked is not None else set()
    retire_monitor = (
        not options.pod_monitor
        and (namespace, name) not in checked
        and await cluster.serves(*monitors.POD_MONITORS)
    )
    options = dataclasses.replace(options, keda=keda, pod_monitor=pod_monitor)
    try:
        rendered = render.render(body, plugins.selected(body, mailplugins), options)
    except configmap.InvalidSpec as error:
        said = status.condition(conditions, "Degraded")
        # Said once: a resync of a spec nobody changed finds the same fault again.
        repeated = (said.get("status"), said.get("reason"), said.get("message")) == (
            "True",
            "InvalidSpec",
            str(error),
        )
        conditions = status.set_condition(
            conditions,
            "Degraded",
            status=True,
            reason="InvalidSpec",
            message=str(error),
            generation=None,
        )
        conditions = status.set_condition(
            conditions,
            "Ready",
            status=False,
            reason="InvalidSpec",
            message="the spec cannot be run",
            generation=None,
        )
        await status.write(cluster, body, {"conditions": conditions})
        if not repeated:
            kopf.warn(
                cast(kopf.Body, body), reason="InvalidSpec", message=f"nothing changed: {error}"
            )
        raise kopf.PermanentError(f"invalid spec, nothing changed: {error}") from None

    changed: list[str] = []
    try:
        token = (
            plugincalls.control_token(options.control_key, namespace, name)
            if options.control_key is not None
            else None
        )
        if await ensure_token(cluster, rendered.token_secret, token):
            changed.append(f"Secret/{kubenames.control_token_secret(name)}")
        if await ensure_event_keys(cluster, rendered.event_keys_secret):
            changed.append(f"Secret/{kubenames.event_keys_secret(name)}")
        changed += await retire_autoscalers(
            cluster, namespace, name, chosen=rendered.autoscaler, keda=keda
        )
        if retire_monitor:
            changed += await retire_pod_monitor(cluster, namespace, name)
        checked.add((namespace, name))
        for obj in rendered.objects:
            if await cluster.apply(obj):
                changed.append(f"{obj['kind']}/{obj['metadata']['name']}")
    except kube.ApiError as error:
        conditions = status.set_condition(
            conditions,
            "Degraded",
            status=True,
            reason="ApplyFailed",
            message=str(error),
            generation=None,
        )
        await status.write(cluster, body, {"conditions": conditions})
        kopf.warn(cast(kopf.Body, body), reason="ApplyFailed", message=str(error))
        raise kopf.TemporaryError(f"applying failed, will retry: {error}", delay=15) from error

    before = body.get("status") or {}
    if (
        rendered.autoscaler_fallback
        and before.get("autoscalerReason") != rendered.autoscaler_reason
    ):
        kopf.warn(
            cast(kopf.Body, body), reason="AutoscalerFallback", message=rendered.autoscaler_reason
        )
    if changed:
        logger.info("applied %s", ", ".join(changed))
        kopf.info(
            cast(kopf.Body, body),
            reason="Applied",
            message=f"{len(changed)} changed: {', '.join(changed)}",
        )
    conditions = status.set_condition(
        conditions,
        "Degraded",
        status=False,
        reason="Reconciled",
        message="every object applied",
        generation=generation,
    )
    found: dict[str, Any] = {
        "observedGeneration": generation,
        "plugins": rendered.plugins,
        "autoscaler": rendered.autoscaler,
        "autoscalerReason": rendered.autoscaler_reason,
        **await status.observe(cluster, body, conditions, generation),
    }
    await status.write(cluster, body, found)
