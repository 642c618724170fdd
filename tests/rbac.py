"""RBAC as the API server's authorizer applies it, for the emulator (tests/emulator.py):
the rules (Cluster)RoleBindings grant a subject, and whether they allow one call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            groups=frozenset(rule.get("apiGroups") or []),
            resources=frozenset(rule.get("resources") or []),
            verbs=frozenset(rule.get("verbs") or []),
            names=frozenset(rule.get("resourceNames") or []),
        )

    def allows(self, verb: str, group: str, resource: str, name: str | None) -> bool:
        return (
            bool(self.groups & {group, "*"})
            and bool(self.resources & {resource, "*"})
            and bool(self.verbs & {verb, "*"})
            and (not self.names or name in self.names)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One API call as RBAC sees it; `namespace` None: cluster-wide."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """What RBAC grants one subject: rules everywhere, and rules in single namespaces."""

    cluster: tuple[Rule, ...]
    namespaced: Mapping[str, tuple[Rule, ...]]

    @classmethod
    def bound(cls, objects: Iterable[Mapping[str, Any]], *, account: str, namespace: str) -> Access:
        """What the (Cluster)RoleBindings in `objects` grant the ServiceAccount."""
        objects = list(objects)
        roles = {
            (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
            for o in objects
            if o["kind"] in ("Role", "ClusterRole")
        }
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        cluster: list[Rule] = []
        namespaced: dict[str, list[Rule]] = {}
        for binding in objects:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if subject not in binding.get("subjects", []):
                continue
            ref = binding["roleRef"]
            where = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
            rules = [Rule.of(r) for r in roles[ref["kind"], where, ref["name"]]["rules"]]
            if binding["kind"] == "ClusterRoleBinding":
                cluster += rules
            else:
                namespaced.setdefault(binding["metadata"]["namespace"], []).extend(rules)
        return cls(tuple(cluster), {ns: tuple(rules) for ns, rules in namespaced.items()})

    def allows(self, call: Call) -> bool:
        rules = list(self.cluster)
        if call.namespace is not None:
            rules += self.namespaced.get(call.namespace, ())
        return any(r.allows(call.verb, call.group, call.resource, call.name) for r in rules)

    def grants(self) -> set[tuple[str, str, str, str | None]]:
        """Every (verb, group, resource, namespace) granted, for comparing with the calls."""
        found: set[tuple[str, str, str, str | None]] = set()
        for where, rules in [(None, self.cluster), *self.namespaced.items()]:
            for rule in rules:
                for verb in rule.verbs:
                    for group in rule.groups:
                        for resource in rule.resources:
                            found.add((verb, group, resource, where))
        return found
