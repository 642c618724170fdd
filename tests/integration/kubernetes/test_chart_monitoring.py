"""The chart's monitoring: PodMonitor, PrometheusRule alerts and the Grafana dashboard render
only when enabled, in the shapes the Prometheus operator and Grafana's sidecar read; the rules
pass `promtool check rules`, and each alert's runbook is a section of the README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests import monitoring
from tests.chart import CHART, by_kind, rendered

README = CHART.parent.parent / "README.md"
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
ALERTS = {
    "EmpathQueueGrowing",
    "EmpathOldestMessageTooOld",
    "EmpathDeliveryFailureRatio",
    "EmpathDnsErrors",
    "EmpathServiceWithoutReadyPods",
    "EmpathJetStreamPublishFailures",
}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required or [],
    }


_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"labels": _LABELS, "annotations": _LABELS},
}
# The fields of monitoring.coreos.com/v1 the chart uses, as the Prometheus operator's CRDs
# spell them (a misspelt field is dropped by the API server without a word).
_RELABELING = _closed(
    {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "targetLabel": {"type": "string"},
        "replacement": {"type": "string"},
        "regex": {"type": "string"},
        "action": {"type": "string"},
    }
)
PODMONITOR = _closed(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _METADATA,
        "spec": _closed(
            {
                "selector": _closed({"matchLabels": _LABELS}, ["matchLabels"]),
                "namespaceSelector": {"type": "object"},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": _RELABELING},
                        },
                        ["port"],
                    ),
                },
            },
            ["selector", "podMetricsEndpoints"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
PROMETHEUSRULE = _closed(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": _closed(
            {
                "groups": {
                    "type": "array",
                    "items": _closed(
                        {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": _closed(
                                    {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                                        "labels": _LABELS,
                                        "annotations": _LABELS,
                                    },
                                    ["alert", "expr", "labels", "annotations"],
                                ),
                            },
                        },
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)


def test_by_default_the_chart_renders_no_monitoring_and_may_only_remove_podmonitors() -> None:
    objects = rendered()
    assert by_kind(objects, "PodMonitor") == []
    assert by_kind(objects, "PrometheusRule") == []
    assert not [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")
    ]
    # PodMonitors made while they were turned on are looked up and removed, nothing more.
    rules = [r for o in by_kind(objects, "ClusterRole") for r in o["rules"]]
    (granted,) = [r for r in rules if "monitoring.coreos.com" in r["apiGroups"]]
    assert (granted["resources"], granted["verbs"]) == (["podmonitors"], ["get", "delete"])
    (operator,) = by_kind(objects, "Deployment")
    env = {
        e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EMPATH_OPERATOR_POD_MONITORS"] == "false"


def test_the_podmonitor_scrapes_the_operators_metrics_port_and_asks_for_podmonitors() -> None:
    objects = rendered(
        {"observability": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
    )
    (monitor,) = by_kind(objects, "PodMonitor")
    jsonschema.validate(monitor, PODMONITOR)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (operator,) = by_kind(objects, "Deployment")
    pod = operator["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EMPATH_OPERATOR_METRICS_LISTEN"] == f"0.0.0.0:{ports[endpoint['port']]}"
    assert env["EMPATH_OPERATOR_POD_MONITORS"] == "true"
    # The operator may make each MailServer's PodMonitor.
    rules = [r for o in by_kind(objects, "ClusterRole") for r in o["rules"]]
    (granted,) = [r for r in rules if "monitoring.coreos.com" in r["apiGroups"]]
    assert granted["resources"] == ["podmonitors"]
    assert {"get", "create", "patch"} <= set(granted["verbs"])
    for obj in objects:
        if obj["kind"] != "PodMonitor":
            for version in VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_the_dashboard_is_a_configmap_grafanas_sidecar_loads() -> None:
    values = {
        "observability": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "Mail"}}}
    }
    (config,) = [
        o
        for o in by_kind(rendered(values), "ConfigMap")
        if o["metadata"]["name"].endswith("-dashboard")
    ]
    for version in VERSIONS:
        kubernetes_validate.validate(config, version, strict=True)
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Mail"}
    board = json.loads(config["data"]["empath.json"])
    assert board == monitoring.dashboard()
    assert board["uid"] == "empath"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    titles = {p["title"] for p in panels}
    assert {"Received", "Recipients by outcome", "Queue by state", "Failure ratio"} <= titles


def test_the_alerts_render_in_the_prometheus_operators_shape_with_the_values_thresholds() -> None:
    values = {
        "observability": {"rules": {"enabled": True, "queueSize": 5000, "labels": {"a": "b"}}}
    }
    (rule,) = by_kind(rendered(values), "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUSRULE)
    assert rule["metadata"]["labels"]["a"] == "b"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == ALERTS
    assert "> 5000" in alerts["EmpathQueueGrowing"]["expr"]
    assert "> 14400" in alerts["EmpathOldestMessageTooOld"]["expr"]


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run .ci/ensure-prometheus"
    (rule,) = by_kind(rendered(monitoring.ENABLED), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the README's headings."""
    return {
        re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    }


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_each_alert_links_its_runbook_in_the_readme(alert: str) -> None:
    (rule,) = [r for r in monitoring.rules() if r["alert"] == alert]
    url = rule["annotations"]["runbook_url"]
    page, _, anchor = url.partition("#")
    assert page == "https://github.com/empath-mta/empath/blob/main/README.md"
    readme = README.read_text()
    assert anchor in _anchors(readme)
    section = readme.split(f"### {alert}\n", 1)[1].split("\n#", 1)[0]
    assert len(section.split()) >= 30, "a runbook says what it means and what to do"
