"""The chart's monitoring objects as the tests read them: the alert rules, the dashboard, and
the metric names their queries use (checked against what a running system serves)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.chart import CHART, by_kind, rendered

ENABLED = {
    "observability": {
        "podMonitor": {"enabled": True},
        "dashboard": {"enabled": True},
        "rules": {"enabled": True},
    }
}

# A metric name in PromQL: Empath's own (`up` and friends are Prometheus's).
_NAME = re.compile(r"\b(empath_[a-z0-9_]+)")
_HISTOGRAM = re.compile(r"_(bucket|count|sum)$")


def rules(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every alert rule of the rendered PrometheusRule."""
    (rule,) = by_kind(rendered(values or ENABLED), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads((CHART / "dashboards" / "empath.json").read_text()))


def dashboard_queries() -> list[str]:
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    found += [
        v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"
    ]
    return found


def metric_names(queries: list[str]) -> set[str]:
    """The metric families the queries name (a histogram's `_bucket` is its family)."""
    return {_HISTOGRAM.sub("", name) for query in queries for name in _NAME.findall(query)}


def queried() -> set[str]:
    """Every metric the alert rules and the dashboard name."""
    return metric_names([r["expr"] for r in rules()] + dashboard_queries())


def family(name: str) -> str:
    """A scraped sample's family, as `metric_names` spells it."""
    return _HISTOGRAM.sub("", name)
