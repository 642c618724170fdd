"""Which MailPlugins a MailServer selects, and what the services are told about them.

A MailServer picks its plugins with a Kubernetes label selector; the services learn of them
as `EMPATH_PLUGINS` entries, in the order they call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from empath.operator import crds


def selects(selector_spec: Mapping[str, Any] | None, plugin_labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector; an absent selector selects nothing."""
    if selector_spec is None:
        return False
    for key, value in (selector_spec.get("matchLabels") or {}).items():
        if plugin_labels.get(key) != value:
            return False
    for expression in selector_spec.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in plugin_labels
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator == "In" and plugin_labels.get(key) not in (values or []):
            return False
        if operator == "NotIn" and present and plugin_labels[key] in (values or []):
            return False
    return True


def selected(
    body: Mapping[str, Any], plugins: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The MailPlugins (of its namespace) the MailServer `body` selects."""
    chooser = (body.get("spec") or {}).get("pluginSelector")
    return [p for p in plugins if selects(chooser, p["metadata"].get("labels") or {})]


def settings(plugins: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """MailPlugins as `EMPATH_PLUGINS` entries, in the order the services call them."""
    schema = crds.schema(crds.MAILPLUGINS)["properties"]["spec"]
    entries = []
    for plugin in plugins:
        spec = crds.with_defaults(schema, plugin.get("spec") or {})
        entry: dict[str, Any] = {
            "name": plugin["metadata"]["name"],
            "hooks": list(spec.get("hooks") or []),
            "timeout": spec["timeoutSeconds"],
            "failure_policy": spec["failurePolicy"],
            "priority": spec["priority"],
        }
        endpoint = spec.get("endpoint") or {}
        for key in ("url", "subject"):
            if key in endpoint:
                entry[key] = endpoint[key]
        entries.append(entry)
    return sorted(entries, key=lambda entry: (entry["priority"], entry["name"]))
