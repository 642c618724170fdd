"""kmock's Kubernetes emulator with the bookkeeping and the checks a real API server does.

kmock stores objects as plain JSON and leaves "special" fields to its users ("inherit and
implement for your cases"). What the operator and kopf rely on is added here: a
`resourceVersion` on every write, `generation` bumped by spec changes (not by status),
`uid` and `creationTimestamp` on creation, `generateName`, and the garbage collector's
cascade: deleting an object deletes what names it as owner.

And what a real cluster refuses or does that a plain store would hide:

- server-side apply (`PATCH` as `application/apply-patch+yaml`), with the fields each
  manager set (`managed`): an apply sets what it says, takes the fields it names (a conflict
  with another manager's value is refused unless `force`), and removes the fields this
  manager applied before and no longer does, unless another manager also set them. Every
  other write makes its manager (`fieldManager`, else the client's name) the owner of the
  fields it changed. The associative lists of the built-in kinds (containers, env, volumes,
  ports, ... by their keys) are merged by item, every other list is atomic
  (tests/server_side_apply.py); a Deployment left without `spec.replicas` (an apply that
  removed the last manager's) gets the API server's default, 1;
- list and watch filtered by `labelSelector` (equality-based), as the API server filters;
- optimistic concurrency: a write that names a `metadata.resourceVersion` other than the
  object's is refused with 409 Conflict;
- RBAC (`access`, tests/rbac.py): a client whose token has rules gets 403 for any call they
  do not allow, and every call it made is recorded in `calls`;
- the OwnerReferencesPermissionEnforcement admission plugin (OpenShift has it on): setting
  `blockOwnerDeletion` needs `update` on the owner's `finalizers`, and changing the owner
  references of an existing object needs `delete` on it;
- KEDA's validating webhook: a ScaledObject for a Deployment an HPA already scales is refused;
- a CRD's CEL rules (`x-kubernetes-validations`, given in `schemas`): an object that breaks
  one is refused with 422, after the schema's defaults are applied, as the API server does.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import cel
from kmock import KubernetesEmulator, Request, action
from kmock._internal import k8s as kmock_k8s
from kmock._internal import parsing as kmock_parsing

from tests import rbac, server_side_apply

_versions = itertools.count(1)
_parse_path = kmock_parsing.parse_path


def _parse_namespaces(path: str) -> Any:
    """kmock fails on `/api/v1/namespaces` (it reads a namespace name into it): the list of
    namespaces, which kopf asks for, is the cluster-wide resource `namespaces`."""
    if path.strip("/") == "api/v1/namespaces":
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, None, None)
    return _parse_path(path)


kmock_parsing.parse_path = _parse_namespaces
APPLY = "application/apply-patch+yaml"


def _contained(current: Any, change: Any) -> bool:
    """Whether merging `change` into `current` would leave it as it is."""
    if isinstance(change, dict):
        return isinstance(current, dict) and all(
            (key not in current) if value is None else _contained(current.get(key), value)
            for key, value in change.items()
        )
    return bool(current == change)


def labels_match(selector: str, labels: Mapping[str, str]) -> bool:
    """An equality-based label selector (`a=b,c!=d,e`), as the API server reads it."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.split("==" if "==" in term else "=", 1)
            if labels.get(key.strip().rstrip("=")) != value.strip().lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def refusals(node_schema: Mapping[str, Any], value: Any) -> list[str]:
    """The messages of the CEL rules `value` breaks, each evaluated with `self` at the node
    of the schema that declares it, as the API server evaluates them."""
    found = [
        str(rule["message"])
        for rule in node_schema.get("x-kubernetes-validations", [])
        if not cel.evaluate(rule["rule"], {"self": value})
    ]
    if isinstance(value, dict):
        for key, child in (node_schema.get("properties") or {}).items():
            if key in value:
                found += refusals(child, value[key])
    if isinstance(value, list) and "items" in node_schema:
        for item in value:
            found += refusals(node_schema["items"], item)
    return found


VERBS = {
    action.FETCH: "get",
    action.LIST: "list",
    action.WATCH: "watch",
    action.CREATE: "create",
    action.DELETE: "delete",
}


def _denied(message: str, *, status: int = 403, reason: str = "Forbidden") -> Exception:
    return kmock_k8s.KubernetesError(status=status, reason=reason, message=message)


@attrs.define(kw_only=True)
class Cluster(KubernetesEmulator):
    # Fields each manager set, by object (resource, namespace, name).
    managed: dict[
        tuple[Any, str | None, str | None], dict[str, set[server_side_apply.FieldPath]]
    ] = attrs.field(factory=dict)
    # RBAC by bearer token; a token not here (the tests' own) may do anything.
    access: dict[str, rbac.Access] = attrs.field(factory=dict)
    # Every call each token with rules made, as RBAC sees it.
    calls: dict[str, set[rbac.Call]] = attrs.field(factory=dict)
    # The CRDs' schemas by plural, with a function that applies their defaults: their CEL
    # rules are checked on every write.
    schemas: dict[str, tuple[dict[str, Any], Any]] = attrs.field(factory=dict)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural:  # not discovery
            try:
                admitted = self._admit(request)
            except kmock_k8s.KubernetesError as error:
                return await self._render_error(error)
            if admitted is not request:
                # kmock serves only the requests it logged: log the write it amounts to.
                self._requests.append(admitted)
                request = admitted
            self._stamp(request)
        before = self._current(request) if request.resource is not None else None
        response = await super()._handle(request)
        if request.resource is not None and response.status < 400:
            self._own(request, before)
        if request.action in (action.DELETE, action.CREATE):
            # An object whose owners are gone goes, also one created after they went.
            await self._collect_garbage()
        return response

    # --- what the API server serves -------------------------------------------------------

    async def _serve_list(self, request: Request) -> Any:
        found = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            found["items"] = [
                item
                for item in found["items"]
                if labels_match(selector, item.get("metadata", {}).get("labels") or {})
            ]
        return found

    async def _serve_watch(self, request: Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if selector and isinstance(event, dict):
                labels = (event.get("object") or {}).get("metadata", {}).get("labels") or {}
                if not labels_match(selector, labels):
                    continue
            yield event

    # --- bookkeeping ----------------------------------------------------------------------

    def _key(self, request: Request) -> tuple[Any, str | None, str | None]:
        name = request.name
        namespace = request.namespace
        if request.action == action.CREATE and isinstance(request.data, dict):
            meta = request.data.get("metadata", {})
            name = name or meta.get("name")
            namespace = namespace or meta.get("namespace")
        return (request.resource, namespace, name)

    def _current(self, request: Request) -> dict[str, Any] | None:
        key = self._key(request)
        if key not in self.objects:
            return None
        found = self.objects[key]
        return None if found.deleted else dict(found.raw)

    def _own(self, request: Request, before: dict[str, Any] | None) -> None:
        """Who set which fields, after a write that was not an apply (applies did it)."""
        key = self._key(request)
        if request.action == action.DELETE and request.name is not None:
            self.managed.pop(key, None)
            return
        if request.action not in (action.CREATE, action.UPDATE) or _is_apply(request):
            return  # a read, or an apply (`_apply` recorded it)
        after = self._current(request)
        if after is None:
            return
        managed = {} if request.action == action.CREATE else self.managed.get(key, {})
        server_side_apply.record_update(before or {}, after, managed, _manager(request))
        self.managed[key] = managed

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

    # --- admission: RBAC, owner references, webhooks, server-side apply --------------------

    def _admit(self, request: Request) -> Request:
        """The request as the store should see it (an apply becomes the write it amounts
        to), or a `KubernetesError` for what the API server would refuse."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        access = self.access.get(token)
        live = self._current(request)
        if access is not None:
            self._authorize(access, token, request, live)
        if request.action == action.UPDATE and isinstance(request.data, dict) and live:
            wanted = (request.data.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != live["metadata"].get("resourceVersion"):
                assert request.resource is not None
                raise _denied(
                    f"Operation cannot be fulfilled on {request.resource.plural} "
                    f'"{request.name}": the object has been modified; please apply your '
                    "changes to the latest version and try again",
                    status=409,
                    reason="Conflict",
                )
        if isinstance(request.data, list) and live is not None:
            for op in request.data:
                path = tuple(p for p in str(op.get("path", "")).split("/") if p)
                if op.get("op") == "test" and server_side_apply.value_at(live, path) != op.get(
                    "value"
                ):
                    raise _denied(
                        f"the server rejected our request due to an error in our request: "
                        f"test of {op['path']} failed",
                        status=422,
                        reason="Invalid",
                    )
        managed = None
        if _is_apply(request):
            request, managed = self._apply(request, live)
        if request.action in (action.CREATE, action.UPDATE) and request.subresource is None:
            new = request.data if request.action == action.CREATE else None
            if request.action == action.UPDATE and isinstance(request.data, dict) and live:
                new = _merged(live, request.data)
            if isinstance(new, dict):
                if access is not None:
                    self._enforce_owner_references(access, token, request, live, new)
                self._keda_webhook(request, new)
                self._validate(request, new)
        if managed is not None:
            self.managed[self._key(request)] = managed
        return request

    def _authorize(
        self, access: rbac.Access, token: str, request: Request, live: dict[str, Any] | None
    ) -> None:
        assert request.resource is not None
        verb = VERBS.get(request.action) if request.action else None
        if request.action == action.UPDATE:
            verb = "patch" if request.method == "PATCH" else "update"
        if request.action == action.DELETE and request.name is None:
            verb = "deletecollection"
        if _is_apply(request) and live is None:
            verb = "patch"  # an apply that creates is still a patch (and needs `create` too)
        resource = request.resource.plural
        if request.subresource:
            resource = f"{resource}/{request.subresource}"
        namespace = self._key(request)[1]
        calls = [
            rbac.Call(str(verb), request.resource.group or "", resource, namespace, request.name)
        ]
        if _is_apply(request) and live is None:
            calls.append(dataclasses.replace(calls[0], verb="create"))
        for call in calls:
            self.calls.setdefault(token, set()).add(call)
            if not access.allows(call):
                raise _denied(
                    f"{resource}{'.' + call.group if call.group else ''} is forbidden: "
                    f"the operator cannot {call.verb} {resource} "
                    f"{'in namespace ' + namespace if namespace else 'at the cluster scope'}"
                )

    def _enforce_owner_references(
        self,
        access: rbac.Access,
        token: str,
        request: Request,
        live: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> None:
        """OwnerReferencesPermissionEnforcement, as kube-apiserver's gc admission plugin."""
        old_refs = (live or {}).get("metadata", {}).get("ownerReferences") or []
        new_refs = new.get("metadata", {}).get("ownerReferences") or []
        if old_refs == new_refs:
            return
        namespace = self._key(request)[1]
        assert request.resource is not None
        if live is not None:
            call = rbac.Call(
                "delete",
                request.resource.group or "",
                request.resource.plural,
                namespace,
                request.name,
            )
            self.calls.setdefault(token, set()).add(call)
            if not access.allows(call):
                raise _denied(f"cannot set an ownerRef on a resource you can't delete: {call}")
        blocking_before = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion")}
        for ref in new_refs:
            if not ref.get("blockOwnerDeletion") or ref.get("uid") in blocking_before:
                continue
            group = ref["apiVersion"].rsplit("/", 1)[0] if "/" in ref["apiVersion"] else ""
            plural = self._plural(ref["apiVersion"], ref["kind"])
            call = rbac.Call("update", group, f"{plural}/finalizers", namespace, ref.get("name"))
            self.calls.setdefault(token, set()).add(call)
            if not access.allows(call):
                raise _denied(
                    f"cannot set blockOwnerDeletion if an ownerReference refers to a resource "
                    f"you can't set finalizers on: {ref['kind']}/{ref.get('name')}"
                )

    def _plural(self, api_version: str, kind: str) -> str:
        group, _, version = api_version.rpartition("/")
        for key, info in self.resources.items():
            if (info.kind, key.group, key.version) == (kind, group, version):
                return str(key.plural)
        return kind.lower() + "s"

    def _keda_webhook(self, request: Request, new: dict[str, Any]) -> None:
        """KEDA's `vscaledobject.kb.io`: one Deployment, one autoscaler."""
        assert request.resource is not None
        if (request.resource.group, request.resource.plural) != ("keda.sh", "scaledobjects"):
            return
        target = (new.get("spec") or {}).get("scaleTargetRef") or {}
        namespace = self._key(request)[1]
        for (resource, where, name), obj in self.objects.items():
            if obj.deleted or where != namespace:
                continue
            if getattr(resource, "plural", None) != "horizontalpodautoscalers":
                continue
            ref = (obj.raw.get("spec") or {}).get("scaleTargetRef") or {}
            if (
                ref.get("name") == target.get("name")
                and name != f"keda-hpa-{self._key(request)[2]}"
            ):
                raise _denied(
                    'admission webhook "vscaledobject.kb.io" denied the request: the workload '
                    f"'{target.get('name')}' of type 'apps/v1.Deployment' is already managed "
                    f"by the hpa '{name}'"
                )

    def _validate(self, request: Request, new: dict[str, Any]) -> None:
        assert request.resource is not None
        if request.resource.plural not in self.schemas:
            return
        schema, with_defaults = self.schemas[request.resource.plural]
        broken = refusals(schema, with_defaults(schema, new))
        if broken:
            raise _denied(
                f"{request.resource.plural} {new.get('metadata', {}).get('name')!r} is invalid: "
                + "; ".join(broken),
                status=422,
                reason="Invalid",
            )

    def _apply(
        self, request: Request, live: dict[str, Any] | None
    ) -> tuple[Request, dict[str, set[server_side_apply.FieldPath]]]:
        """Server-side apply, as the store's create or merge patch that it amounts to."""
        key = self._key(request)
        managed = {} if live is None else copy.deepcopy(self.managed.get(key, {}))
        try:
            new = server_side_apply.apply(
                live or {},
                request.data or {},
                managed,
                manager=request.params.get("fieldManager", ""),
                force=request.params.get("force") == "true",
            )
        except server_side_apply.ApplyConflict as conflict:
            raise _denied(
                f"Apply failed with conflicts: {conflict}", status=409, reason="Conflict"
            ) from None
        if not request.params.get("fieldManager"):
            raise _denied("PATCH is required to have a fieldManager", status=400, reason="Invalid")
        if new.get("kind") == "Deployment" and "replicas" not in new.get("spec", {}):
            new.setdefault("spec", {})["replicas"] = 1  # the API server's default
        if live is None:
            return attrs.evolve(request, method="POST", action=action.CREATE, data=new), managed
        return attrs.evolve(request, data=server_side_apply.merge_patch(live, new)), managed

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
                for key, obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    self.managed.pop(key, None)
                    await self._buses[key[0]].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


def _is_apply(request: Request) -> bool:
    return (
        request.method == "PATCH"
        and request.headers.get("Content-Type", "").split(";")[0].strip() == APPLY
    )


def _manager(request: Request) -> str:
    """The field manager of a write: its `fieldManager`, else the client's name."""
    agent = request.headers.get("User-Agent", "unknown").split("/")[0]
    return request.params.get("fieldManager") or agent


def _merged(live: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(live)
    for key, value in patch.items():
        if value is None:
            found.pop(key, None)
        elif isinstance(value, dict) and isinstance(found.get(key), dict):
            found[key] = _merged(found[key], value)
        else:
            found[key] = value
    return found
