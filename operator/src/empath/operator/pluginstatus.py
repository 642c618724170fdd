"""What a MailPlugin's status says: the MailServers that use it, and whether they can.

`usedBy` are the MailServers of its namespace whose `pluginSelector` selects it: each runs it
(its entry is in their `EMPATH_PLUGINS`) once their reconcile is done. Its `Ready` condition
says whether it can be run at all: `False` with `InvalidSpec` when the services would refuse
it (the MailServers that select it are then Degraded and change nothing), `False` with
`NotSelected` when no MailServer selects it, `True` with `Selected` otherwise. The status is
derived from the specs, so any reconcile may write it and none writes an older view over a
newer one.

How its calls went is published by the services: the operator asks each MailServer that uses
it (`plugincalls`, the control API's `GET /api/v1/plugins`, what `empathctl plugins` shows)
and writes the answer per MailServer in `lastCall`. One of them saying its last call failed
makes it `Ready` `False` with reason `Failing` and that failure's reason. Its `CallsReported`
condition says whether the operator could ask (`False` with why: no operator key, a control
token the operator does not know, control unreachable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from empath.operator import configmap, crds, kube, plugincalls, plugins, status


def plugin_path(namespace: str, name: str | None = None) -> str:
    return kube.path(f"{crds.GROUP}/{crds.VERSION}", "MailPlugin", namespace, name)


def found(
    plugin: Mapping[str, Any],
    servers: Sequence[Mapping[str, Any]],
    heard: Mapping[str, plugincalls.Heard] | None = None,
) -> dict[str, Any]:
    """The status of `plugin` among the MailServers of its namespace, with what their control
    APIs said of its calls (`heard`, by MailServer; None: not asked) (pure)."""
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
    result: dict[str, Any] = {"usedBy": used_by, "observedGeneration": generation}
    if heard is not None:
        # A list, not a map by server: a merge patch replaces it whole, so a server that no
        # longer uses the plugin leaves no entry behind.
        name = plugin["metadata"]["name"]
        told = {server: heard[server] for server in used_by if server in heard}
        calls = [
            {"mailServer": server, **plugincalls.last_call(said.plugins[name])}
            for server, said in told.items()
            if name in said.plugins
        ]
        result["lastCall"] = calls
        failing = [
            f"{call['mailServer']}: {call['reason']}"
            for call in calls
            if call["state"] == "failing"
        ]
        if ready and failing:
            ready, reason, message = False, "Failing", "; ".join(failing)
        problems = [(server, said.problem) for server, said in told.items() if said.problem]
        if problems:
            conditions = status.set_condition(
                conditions,
                "CallsReported",
                status=False,
                reason=problems[0][1][0],
                message="; ".join(f"{server}: {problem[1]}" for server, problem in problems),
                generation=generation,
            )
        elif told:
            conditions = status.set_condition(
                conditions,
                "CallsReported",
                status=True,
                reason="Reported",
                message=f"by the control API of {', '.join(sorted(told))}",
                generation=generation,
            )
    conditions = status.set_condition(
        conditions,
        "Ready",
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
    )
    return {**result, "conditions": conditions}


async def ask_all(
    caller: plugincalls.Caller, namespace: str, names: Sequence[str]
) -> dict[str, plugincalls.Heard]:
    """What the control API of each of MailServers `names` says, asked all at once."""
    if not names:
        return {}
    async with httpx.AsyncClient(trust_env=False) as http:
        answers = await asyncio.gather(
            *(plugincalls.ask(http, caller, namespace, name) for name in names)
        )
    return dict(zip(names, answers, strict=True))


async def refresh(
    cluster: kube.Cluster, namespace: str, caller: plugincalls.Caller | None = None
) -> None:
    """Write the status of every MailPlugin of `namespace` that says something new (read
    from the API as it is now: what kopf's index holds has no status), with what the
    control API of each MailServer that selects one says of its calls (`caller`: how to ask)."""
    servers = await cluster.list(kube.path(f"{crds.GROUP}/{crds.VERSION}", "MailServer", namespace))
    listed = await cluster.list(plugin_path(namespace))
    heard = None
    if caller is not None:
        using = {name for plugin in listed for name in found(plugin, servers)["usedBy"]}
        heard = await ask_all(caller, namespace, sorted(using))
    for plugin in listed:
        now = found(plugin, servers, heard)
        before = plugin.get("status") or {}
        if all(before.get(key) == value for key, value in now.items()):
            continue
        await cluster.patch_status(plugin_path(namespace, plugin["metadata"]["name"]), now)
