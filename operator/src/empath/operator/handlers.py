"""kopf handlers: MailServers are reconciled on create, update and resume, and again when a
MailPlugin they select changes or an object they own is deleted; their Deployments and
Services report back into their status. What a reconcile does is `reconcile`; what the status
says is `status`; this module says when each happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from empath.core import kubeconfig
from empath.operator import crds, kube, metadata, plugins, reconcile, render, status


@dataclasses.dataclass
class State:
    """What every handler gets, as `memo.state`."""

    cluster: kube.Cluster
    options: render.Options


async def _reconcile(
    body: Mapping[str, Any], mailplugins: list[Mapping[str, Any]], state: State, logger: Any
) -> None:
    await reconcile.reconcile(
        body, mailplugins, cluster=state.cluster, options=state.options, logger=logger
    )


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
    mailplugins = _indexed(kwargs, "plugins_index", str(namespace))
    await _reconcile(_plain(body), mailplugins, memo.state, logger)


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MAILPLUGINS)
async def mailplugin_changed(
    type: str, namespace: str | None, name: str, memo: Any, logger: Any, **kwargs: Any
) -> None:
    """A MailPlugin came, changed or went: reconcile the MailServers whose render it changes."""
    if type is None:  # the initial listing: the resume handlers see it all
        return
    cluster: kube.Cluster = memo.state.cluster
    mailplugins = _indexed(kwargs, "plugins_index", str(namespace))
    for server in sorted(set(_indexed(kwargs, "servers_index", str(namespace)))):
        body = await cluster.get(kube.server_path(str(namespace), server))
        if body is None:
            continue
        now = [p["metadata"]["name"] for p in plugins.selected(body, mailplugins)]
        if now != list((body.get("status") or {}).get("plugins") or []) or name in now:
            logger.info("MailPlugin %s changed: reconciling MailServer %s", name, server)
            try:
                await _reconcile(body, mailplugins, memo.state, logger)
            except kopf.PermanentError as error:
                logger.warning("MailServer %s: %s", server, error)


OWNED = {"app.kubernetes.io/managed-by": metadata.MANAGED_BY}


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
    server = labels.get(metadata.SERVER_LABEL)
    if not server:
        return
    cluster: kube.Cluster = memo.state.cluster
    body = await cluster.get(kube.server_path(str(namespace), server))
    if body is None or not body.get("status"):
        return  # gone, or not reconciled yet: its own handler writes the first status
    if type == "DELETED" and not body["metadata"].get("deletionTimestamp"):
        logger.warning("%s of MailServer %s was deleted: making it again", name, server)
        mailplugins = _indexed(kwargs, "plugins_index", str(namespace))
        with contextlib.suppress(kopf.PermanentError):
            await _reconcile(body, mailplugins, memo.state, logger)
        return
    found = body["status"]
    generation = found.get("observedGeneration")
    conditions = list(found.get("conditions") or [])
    await status.write(cluster, body, await status.observe(cluster, body, conditions, generation))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", f"{crds.GROUP}/{crds.VERSION}"),
        "kind": body.get("kind", "MailServer"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
