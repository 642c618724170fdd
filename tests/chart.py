"""The Helm chart rendered through Helm's own Go SDK (helm-python-sdk), as `helm install`
would render it, for the tests that look at its objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).parent.parent / "charts" / "empath"
TRYOUT = {
    "tryout": {
        "nats": {"enabled": True},
        "objectStore": {"enabled": True},
        "mailserver": {"enabled": True},
    }
}


def rendered(
    values: dict[str, Any] | None = None, *, namespace: str = "mail"
) -> list[dict[str, Any]]:
    """Every object of the chart installed as release `empath` in `namespace`."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name="empath", namespace=namespace, is_install=True)
    return [
        doc
        for name, text in sorted(files.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]
