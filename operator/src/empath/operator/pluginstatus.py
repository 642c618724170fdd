"""What a MailPlugin's status says: the MailServers that use it, and whether they can.

`usedBy` are the MailServers of its namespace whose `pluginSelector` selects it: each runs it
(its entry is in their `EMPATH_PLUGINS`) once their reconcile is done. Its `Ready` condition
says whether it can be run at all: `False` with `InvalidSpec` when the services would refuse
it (the MailServers that select it are then Degraded and change nothing), `False` with
`NotSelected` when no MailServer selects it, `True` with `Selected` otherwise. The status is
derived from the specs alone, so any reconcile may write it and none writes an older view
over a newer one. How its calls went is published by the services and read with `empathctl
plugins` (the control API's `GET /api/v1/plugins`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from empath.operator import configmap, crds, kube, plugins, status


def plugin_path(namespace: str, name: str | None = None) -> str:
    return kube.path(f"{crds.GROUP}/{crds.VERSION}", "MailPlugin", namespace, name)


def found(plugin: Mapping[str, Any], servers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The status of `plugin` among the MailServers of its namespace (pure)."""
    labels = plugin["metadata"].get("labels") or {}
    used_by = sorted(
        str(server["metadata"]["name"])
        for server in servers
        if not server["metadata"].get("deletionTimestamp")
        and plugins.selects((server.get("spec") or {}).get("pluginSelector"), labels)
    )
    conditions = list((plugin.get("status") or {}).get("conditions") or [])
    generation = plugin["metadata"].get("generation")
    try:
        plugins.check(plugin)
    except configmap.InvalidSpec as error:
        ready, reason, message = False, "InvalidSpec", str(error)
    else:
        if used_by:
            ready, reason = True, "Selected"
            message = f"in the settings of {', '.join(used_by)}"
        else:
            ready, reason, message = False, "NotSelected", "no MailServer selects it"
    conditions = status.set_condition(
        conditions,
        "Ready",
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
    )
    return {"usedBy": used_by, "observedGeneration": generation, "conditions": conditions}


async def refresh(cluster: kube.Cluster, namespace: str) -> None:
    """Write the status of every MailPlugin of `namespace` that says something new (read
    from the API as it is now: what kopf's index holds has no status)."""
    servers = await cluster.list(kube.path(f"{crds.GROUP}/{crds.VERSION}", "MailServer", namespace))
    for plugin in await cluster.list(plugin_path(namespace)):
        now = found(plugin, servers)
        before = plugin.get("status") or {}
        if all(before.get(key) == value for key, value in now.items()):
            continue
        await cluster.patch_status(plugin_path(namespace, plugin["metadata"]["name"]), now)
