"""kopf handlers: MailServers are reconciled on create, update and resume, and again when a
MailPlugin they select changes or an object they own is deleted; their Deployments and
Services report back into their status. What a reconcile does is `reconcile`; what the status
says is `status`; this module says when each happens.

Whatever caused a reconcile, one that fails is tried again with a growing delay
(`Schedule`), and every MailServer is reconciled again now and then (the resync), which puts
back what was edited by hand: `resync` looks at the schedule every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from empath.core import kubeconfig, periodic
from empath.operator import (
    crds,
    kube,
    metadata,
    metrics,
    plugincalls,
    plugins,
    pluginstatus,
    reconcile,
    render,
    status,
)

# How often `resync` looks whether a reconcile is due.
TICK = 1.0
# The delay before the first retry of a failed reconcile, doubled each time up to the cap.
BACKOFF = 1.0
BACKOFF_CAP = 300.0


def backoff(attempts: int) -> float:
    """The delay before retry number `attempts` (1, 2, ...)."""
    return float(min(BACKOFF * 2 ** max(attempts - 1, 0), BACKOFF_CAP))


@dataclasses.dataclass
class Schedule:
    """When each MailServer is due for its next reconcile, and how many have failed since its
    last good one: a good reconcile makes it due after `resync` seconds, a failed one after
    `backoff(failures)`."""

    resync: float
    due: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    failures: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def done(self, key: tuple[str, str]) -> None:
        self.failures.pop(key, None)
        self.due[key] = time.monotonic() + self.resync

    def failed(self, key: tuple[str, str]) -> float:
        attempts = self.failures[key] = self.failures.get(key, 0) + 1
        delay = backoff(attempts)
        self.due[key] = time.monotonic() + delay
        return delay

    def is_due(self, key: tuple[str, str]) -> bool:
        return time.monotonic() >= self.due.setdefault(key, time.monotonic() + self.resync)

    def forget(self, key: tuple[str, str]) -> None:
        self.due.pop(key, None)
        self.failures.pop(key, None)


@dataclasses.dataclass
class State:
    """What every handler gets, as `memo.state`."""

    cluster: kube.Cluster
    options: render.Options
    schedule: Schedule = dataclasses.field(default_factory=lambda: Schedule(resync=300.0))
    # Apply the CRDs this version serves at start (`upgrade_crds`).
    apply_crds: bool = False
    # Each MailPlugin's labels and spec as last handled: its status writes change neither.
    plugins_seen: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # The MailServers whose PodMonitor of an earlier setting was looked for (`reconcile`).
    pod_monitors_checked: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    # One reconcile of a MailServer at a time, whatever caused it.
    locks: dict[tuple[str, str], asyncio.Lock] = dataclasses.field(default_factory=dict)
    # kopf posts events only from the context of its handlers of objects: `resync` runs its
    # reconciles in a copy of one (the first MailServer handler's), so that they post too.
    posting: contextvars.Context | None = None
    # How the MailPlugins' last calls are asked of each MailServer's control API.
    calls: plugincalls.Caller = dataclasses.field(default_factory=plugincalls.Caller)


async def _reconcile(
    body: Mapping[str, Any] | None,
    mailplugins: Sequence[Mapping[str, Any]],
    state: State,
    logger: Any,
    *,
    key: tuple[str, str] | None = None,
) -> None:
    """Reconcile, and schedule the next one: the resync after a good one, a retry after a
    failed one. A spec the services refuse waits for the next change (or resync). One
    reconcile of a MailServer runs at a time: a `body` of None (the MailServer `key`) is read
    once its turn comes, and so is one that had to wait (another may have applied a newer
    spec meanwhile, which an older read must not undo)."""
    if key is None:
        assert body is not None
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
    lock = state.locks.setdefault(key, asyncio.Lock())
    waited = lock.locked()
    async with lock:
        if body is None or waited:
            body = await state.cluster.get(kube.server_path(*key))
            if body is None or body["metadata"].get("deletionTimestamp"):
                state.schedule.forget(key)
                return
            mailplugins = await state.cluster.list(
                kube.path(f"{crds.GROUP}/{crds.VERSION}", "MailPlugin", key[0])
            )
        await _reconcile_now(body, mailplugins, state, logger, key)


async def _reconcile_now(
    body: Mapping[str, Any],
    mailplugins: Sequence[Mapping[str, Any]],
    state: State,
    logger: Any,
    key: tuple[str, str],
) -> None:
    try:
        with metrics.reconciling(body):
            await reconcile.reconcile(
                body,
                mailplugins,
                cluster=state.cluster,
                options=state.options,
                logger=logger,
                pod_monitors_checked=state.pod_monitors_checked,
            )
    except kopf.PermanentError:
        state.schedule.done(key)
        await _refresh_plugins(state, key[0], logger)
        raise
    except (kopf.TemporaryError, kube.ApiError) as error:
        delay = state.schedule.failed(key)
        raise kopf.TemporaryError(str(error), delay=delay) from error
    state.schedule.done(key)
    if mailplugins or (body.get("spec") or {}).get("pluginSelector"):
        await _refresh_plugins(state, key[0], logger)


async def _refresh_plugins(state: State, namespace: str, logger: Any) -> None:
    """The MailPlugins' status after a reconcile; a failure to write it fails nothing else
    (the next reconcile writes it)."""
    try:
        await pluginstatus.refresh(state.cluster, namespace, state.calls)
    except kube.ApiError as error:
        logger.warning("MailPlugin status of %s not written: %s", namespace, error)


async def _reconcile_later_if_failing(key: tuple[str, str], state: State, logger: Any) -> None:
    """A reconcile caused by something other than the MailServer (kopf retries only the
    handlers of the object that changed), of the MailServer as it is when its turn comes: a
    failure is left to `resync`'s retries."""
    try:
        await _reconcile(None, [], state, logger, key=key)
    except kopf.PermanentError as error:
        logger.warning("MailServer %s: %s", key[1], error)
    except kopf.TemporaryError as error:
        logger.warning("MailServer %s: %s; trying again in %.0f s", key[1], error, error.delay)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, logger: Any, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The objects of MailServers are listed and watched by label on the API server: the
    # `labels=` filters of the handlers below only filter what was sent.
    for resource in OWNED_RESOURCES:
        settings.watching.label_selectors[resource] = OWNED_SELECTOR
    state: State = memo.state
    if state.apply_crds:
        await upgrade_crds(state.cluster, logger)
    # Started here, in kopf's loop; stopped at cleanup. (Its events: `State.posting`.)
    memo.resync_stop = asyncio.Event()
    memo.resyncing = asyncio.create_task(
        resync(memo.state, logger, memo.resync_stop), name="empath-resync"
    )


async def upgrade_crds(cluster: kube.Cluster, logger: Any) -> None:
    """Apply this version's CRDs (Helm upgrades never touch `crds/`), before kopf watches.
    The chart lets the operator patch these two CRDs by name, not create them: one missing
    (installed with --skip-crds and not yet made) is left to whoever skipped it."""
    for crd in crds.definitions():
        try:
            if await cluster.apply(crd):
                logger.info("CustomResourceDefinition %s upgraded", crd["metadata"]["name"])
        except kube.ApiError as error:
            logger.warning(
                "CustomResourceDefinition %s not applied: %s", crd["metadata"]["name"], error
            )


@kopf.on.cleanup()
async def stop_resync(memo: Any, **_: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "resyncing", None)
    if task is not None:
        memo.resync_stop.set()  # a reconcile in progress is let finish
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    state: State = memo.state
    if state.posting is None:
        state.posting = contextvars.copy_context()
    await _reconcile(_plain(body), mailplugins, state, logger)


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
async def mailserver_event(
    type: str | None, namespace: str | None, name: str, uid: str | None, memo: Any, **_: Any
) -> None:
    """A MailServer is gone: no resync of it, and no metrics series of it (the garbage
    collector removes its objects)."""
    if type == "DELETED":
        memo.state.schedule.forget((str(namespace), name))
        metrics.forget(str(namespace), name, uid)


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MAILPLUGINS)
async def mailplugin_changed(
    type: str,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: Any,
    **kwargs: Any,
) -> None:
    """A MailPlugin came, changed or went: reconcile the MailServers whose render it changes."""
    if type is None:  # the initial listing: the resume handlers see it all
        return
    state: State = memo.state
    seen = json.dumps([dict(body.metadata.labels), dict(body.spec)], sort_keys=True)
    key = (str(namespace), name)
    if type != "DELETED" and state.plugins_seen.get(key) == seen:
        return  # its status, written by the operator: nothing the servers render changed
    state.plugins_seen[key] = seen
    if type == "DELETED":
        state.plugins_seen.pop(key, None)
    cluster: kube.Cluster = state.cluster
    mailplugins = _indexed(kwargs, "plugins_index", str(namespace))
    for server in sorted(set(_indexed(kwargs, "servers_index", str(namespace)))):
        found = await cluster.get(kube.server_path(str(namespace), server))
        if found is None:
            continue
        now = [p["metadata"]["name"] for p in plugins.selected(found, mailplugins)]
        before = found.get("status") or {}
        # A server whose last render failed may have failed for this plugin (gone now).
        failed = status.condition(list(before.get("conditions") or []), "Degraded")
        if (
            now != list(before.get("plugins") or [])
            or name in now
            or failed.get("status") == "True"
        ):
            logger.info("MailPlugin %s changed: reconciling MailServer %s", name, server)
            await _reconcile_later_if_failing((str(namespace), server), state, logger)
    await _refresh_plugins(state, str(namespace), logger)


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MAILSERVERS)
async def mailserver_gone(
    type: str | None, namespace: str | None, memo: Any, logger: Any, **_: Any
) -> None:
    """A MailServer went: the MailPlugins it used no longer say so."""
    if type == "DELETED":
        await _refresh_plugins(memo.state, str(namespace), logger)


OWNED = {metadata.MANAGED_BY_LABEL: metadata.MANAGED_BY}
OWNED_SELECTOR = ",".join(f"{key}={value}" for key, value in OWNED.items())
# With their versions: kopf matches a selector without one to preferred versions only.
OWNED_RESOURCES: tuple[tuple[str, str] | tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
)


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
        await _reconcile_later_if_failing((str(namespace), server), memo.state, logger)
        return
    await status.refresh(cluster, body)


async def resync(state: State, logger: Any, stop: asyncio.Event) -> None:
    """Reconcile each MailServer when it is due: the periodic resync, or the retry of a
    failed reconcile (whatever caused it). Hand edits of its objects are put back this way.
    Runs beside kopf until `stop`; it knows the MailServers the handlers above have reconciled
    (a replica kopf keeps on standby knows none)."""
    await periodic.every(
        TICK,
        lambda: _resync_due(state, logger),
        stop=stop,
        log=logging.getLogger("empath.operator"),
        what="resync failed",
        wait_first=True,
    )


async def _resync_due(state: State, logger: Any) -> None:
    for key in [key for key in list(state.schedule.due) if state.schedule.is_due(key)]:
        try:
            reconciling = _reconcile_later_if_failing(key, state, logger)
            if state.posting is None:
                await reconciling
            else:
                await asyncio.create_task(reconciling, context=state.posting.copy())
        except Exception as error:  # one MailServer's failure does not hold up the others
            delay = state.schedule.failed(key)
            logger.warning("MailServer %s: %s; trying again in %.0f s", key[1], error, delay)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", f"{crds.GROUP}/{crds.VERSION}"),
        "kind": body.get("kind", "MailServer"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
