"""The chart's RBAC for the operator's service account, as the emulator enforces it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from tests import rbac

CHART = Path(__file__).parent.parent / "charts" / "empath"
RELEASE_NAMESPACE = "empath-system"


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects, installed as release `empath` in `empath-system`."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(
            values or {}, name="empath", namespace=RELEASE_NAMESPACE, is_install=True
        )
    return [
        doc
        for name, text in sorted(files.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def access(values: dict[str, Any] | None = None) -> rbac.Access:
    """What the operator's service account may do with the chart installed with `values`."""
    found = objects(values)
    (account,) = [o for o in found if o["kind"] == "ServiceAccount"]
    return rbac.Access.bound(
        found, account=account["metadata"]["name"], namespace=RELEASE_NAMESPACE
    )
