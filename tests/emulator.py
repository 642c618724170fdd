"""kmock's Kubernetes emulator with the bookkeeping a real API server does.

kmock stores objects as plain JSON and leaves "special" fields to its users ("inherit and
implement for your cases"). What the operator and kopf rely on is added here: a
`resourceVersion` on every write, `generation` bumped by spec changes (not by status),
`uid` and `creationTimestamp` on creation, `generateName`, and the garbage collector's
cascade: deleting an object deletes what names it as owner.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import uuid
from typing import Any

import aiohttp.web
import attrs
from kmock import KubernetesEmulator, Request, action

_versions = itertools.count(1)


def _contained(current: Any, change: Any) -> bool:
    """Whether merging `change` into `current` would leave it as it is."""
    if isinstance(change, dict):
        return isinstance(current, dict) and all(
            (key not in current) if value is None else _contained(current.get(key), value)
            for key, value in change.items()
        )
    return bool(current == change)


@attrs.define(kw_only=True)
class Cluster(KubernetesEmulator):
    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None:
            self._stamp(request)
        response = await super()._handle(request)
        if request.action in (action.DELETE, action.CREATE):
            # An object whose owners are gone goes, also one created after they went.
            await self._collect_garbage()
        return response

    def _current(self, request: Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return None
        found = self.objects[key]
        return None if found.deleted else dict(found.raw)

    def _stamp(self, request: Request) -> None:
        version = str(next(_versions))
        data = request.data
        if request.action == action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            meta["resourceVersion"] = version
            meta["generation"] = 1
        elif request.action == action.UPDATE and request.name is not None:
            current = self._current(request) or {}
            generation = int((current.get("metadata") or {}).get("generation", 1))
            if isinstance(data, dict):
                spec_changes = (
                    request.subresource != "status"
                    and "spec" in data
                    and not _contained(current.get("spec"), data["spec"])
                )
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = version
                meta["generation"] = generation + 1 if spec_changes else generation
            elif isinstance(data, list):  # a JSON patch
                spec_changes = any(str(op.get("path", "")).startswith("/spec") for op in data)
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
                if spec_changes:
                    value = generation + 1
                    data.append({"op": "add", "path": "/metadata/generation", "value": value})

    async def _collect_garbage(self) -> None:
        """Delete every object whose owners are all gone (and so on down the chain)."""
        while True:
            async with self._lock:
                alive = {
                    obj.raw.get("metadata", {}).get("uid")
                    for obj in self.objects.values()
                    if not obj.deleted
                }
                orphans = [
                    (key, obj)
                    for key, obj in self.objects.items()
                    if not obj.deleted
                    and (owners := obj.raw.get("metadata", {}).get("ownerReferences"))
                    and not any(owner.get("uid") in alive for owner in owners)
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return
