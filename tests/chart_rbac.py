"""The chart's RBAC for the operator's service account, as the emulator enforces it."""

from __future__ import annotations

from typing import Any

from tests import chart, rbac

RELEASE_NAMESPACE = "empath-system"


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects, installed as release `empath` in `empath-system`."""
    return chart.rendered(values, namespace=RELEASE_NAMESPACE)


def access(values: dict[str, Any] | None = None) -> rbac.Access:
    """What the operator's service account may do with the chart installed with `values`."""
    found = objects(values)
    (account,) = [o for o in found if o["kind"] == "ServiceAccount"]
    return rbac.Access.bound(
        found, account=account["metadata"]["name"], namespace=RELEASE_NAMESPACE
    )
