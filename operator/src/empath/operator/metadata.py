"""What every object of a MailServer agrees on: its labels, selectors, owner and ports.

The operator finds its objects again by these labels (its watches select on them), the
Services and PodDisruptionBudgets find the pods by these selectors, and the garbage collector
removes the objects with their MailServer by the owner reference: one definition each, so
that no object renders its own spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from empath.operator import crds

COMPONENTS = ("ingress", "spool", "delivery", "control")
MANAGED_BY = "empath-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SERVER_LABEL = "empath.io/mailserver"
CONFIG_HASH = "empath.io/config-hash"

# The ports inside the pods: the settings name them as listen addresses, the containers as
# ports, the Services as targets.
SMTP_PORT = 2525
SUBMISSION_PORT = 2587
CONTROL_PORT = 8025
HEALTH_PORT = 8080


def labels(server: str, component: str | None = None) -> dict[str, str]:
    """The labels of every object of `server` (and of its pods), by component where it has one."""
    found = {
        "app.kubernetes.io/name": "empath",
        "app.kubernetes.io/instance": server,
        MANAGED_BY_LABEL: MANAGED_BY,
        SERVER_LABEL: server,
    }
    if component:
        found["app.kubernetes.io/component"] = component
    return found


def selector(server: str, component: str) -> dict[str, str]:
    """The pods of one component: the smallest set of labels that tells them apart."""
    return {"app.kubernetes.io/instance": server, "app.kubernetes.io/component": component}


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The MailServer as the controlling owner, so its objects go when it goes."""
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "MailServer",
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(
    body: Mapping[str, Any],
    api_version: str,
    kind: str,
    name: str,
    component: str | None,
    **rest: Any,
) -> dict[str, Any]:
    """An object of the MailServer `body`: in its namespace, with its labels and owner."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": body["metadata"]["namespace"],
            "labels": labels(body["metadata"]["name"], component),
            "ownerReferences": [owner_reference(body)],
        },
        **rest,
    }
