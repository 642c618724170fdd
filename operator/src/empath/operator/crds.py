"""The custom resource definitions this operator serves, and their schema defaults.

The YAML files next to this module are the definitions; the Helm chart ships the same files
(a test keeps them equal). Helm installs them but never upgrades them (`crds/`), so the
operator applies them itself when it starts (`main`): a new operator version brings its new
fields with it, and no spec field is pruned for want of them. The API server applies the
schema defaults on a real cluster; the operator applies them too, so that it renders the same
objects whatever stored the resource.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import yaml

GROUP = "empath.io"
VERSION = "v1alpha1"
MAILSERVERS = "mailservers"
MAILPLUGINS = "mailplugins"
FILES = (f"{MAILSERVERS}.{GROUP}.yaml", f"{MAILPLUGINS}.{GROUP}.yaml")


def definitions() -> list[dict[str, Any]]:
    """Every CRD, as the chart installs them."""
    folder = resources.files(__package__).joinpath("crds")
    return [yaml.safe_load(folder.joinpath(name).read_text()) for name in FILES]


def schema(plural: str) -> dict[str, Any]:
    """The OpenAPI v3 schema of `plural`'s served version."""
    for crd in definitions():
        if crd["spec"]["names"]["plural"] == plural:
            for version in crd["spec"]["versions"]:
                if version["name"] == VERSION:
                    return dict(version["schema"]["openAPIV3Schema"])
    raise LookupError(plural)


def with_defaults(node_schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server fills them."""
    if not isinstance(value, dict) or node_schema.get("type") != "object":
        if isinstance(value, list) and "items" in node_schema:
            return [with_defaults(node_schema["items"], item) for item in value]
        return value
    result = dict(value)
    for key, child in node_schema.get("properties", {}).items():
        if key not in result and "default" in child:
            result[key] = copy.deepcopy(child["default"])
        if key in result:
            result[key] = with_defaults(child, result[key])
    return result
