"""Which MailPlugins a MailServer selects, what the services are told about them, and what
ingress's pod needs to run them.

A MailServer picks its plugins with a Kubernetes label selector; the services learn of them
as `EMPATH_PLUGINS` entries, in the order they call them. What a plugin needs as files comes
into ingress's pod under `/etc/empath/plugins/<plugin>/`: the shared secret (`secret/`) and
the CAs (`ca/`) of an HTTP plugin, the Secret an in-process plugin's options name
(`options/`), and a C module's library (`lib/`), copied there from its own image by an init
container. The entries name those paths, so the services read them as they would anywhere.
A MailPlugin the services would refuse is refused here, naming its field (`check`).
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from empath.core import plugins as contract
from empath.core import settings as settings_module
from empath.operator import configmap, crds

DIRECTORY = "/etc/empath/plugins"
# Where an init container of a C module's image finds the volume it copies the library into.
COPY_TO = "/empath-plugin"
# The entry fields that name files inside ingress's pod, or options only the plugin reads
# (they may name such files): the operator cannot check them, ingress does at start.
POD_LOCAL = ("ca_file", "secret_file", "options", "library", "arguments")


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


@functools.cache
def _schema() -> dict[str, Any]:
    """The spec's schema, read once: a render reads each plugin's spec a few times."""
    return dict(crds.schema(crds.MAILPLUGINS)["properties"]["spec"])


def _spec(plugin: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's spec with the CRD's defaults (copied: the schema is shared)."""
    return dict(crds.with_defaults(_schema(), plugin.get("spec") or {}))


def directory(plugin: str) -> str:
    """Where ingress finds the files of the MailPlugin named `plugin`."""
    return f"{DIRECTORY}/{plugin}"


def _key_of(reference: Mapping[str, Any]) -> str:
    return str(reference.get("key") or "ca.crt")


def entry(plugin: Mapping[str, Any]) -> dict[str, Any]:
    """One MailPlugin as an `EMPATH_PLUGINS` entry (the names of `settings.Plugin`)."""
    name = plugin["metadata"]["name"]
    spec = _spec(plugin)
    found: dict[str, Any] = {"name": name}
    if spec.get("hooks"):
        found["hooks"] = list(spec["hooks"])
    found |= {
        "timeout": spec["timeoutSeconds"],
        "failure_policy": spec["failurePolicy"],
        "priority": spec["priority"],
    }
    endpoint = spec.get("endpoint") or {}
    for key in ("url", "subject"):
        if key in endpoint:
            found[key] = endpoint[key]
    ca = endpoint.get("caSecret") or endpoint.get("caConfigMap")
    if ca:
        found["ca_file"] = f"{directory(name)}/ca/{_key_of(ca)}"
    if endpoint.get("secretRef"):
        found["secret_file"] = f"{directory(name)}/secret/{endpoint['secretRef']['key']}"
    if spec.get("module"):
        found["module"] = spec["module"]
    if "options" in spec:
        found["options"] = spec["options"]
    library = spec.get("library")
    if library:
        found["library"] = f"{directory(name)}/lib/{posixpath.basename(library['path'])}"
        found["arguments"] = list(library.get("arguments") or [])
    if "bodyLimit" in spec:
        found["body_limit"] = spec["bodyLimit"]
    if "concurrency" in spec:
        found["concurrency"] = spec["concurrency"]
    return found


def settings(plugins: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """MailPlugins as `EMPATH_PLUGINS` entries, in the order the services call them."""
    entries = [entry(plugin) for plugin in plugins]
    return sorted(entries, key=lambda found: (found["priority"], found["name"]))


def _refuse(name: str, fields: str, message: str) -> configmap.InvalidSpec:
    return configmap.InvalidSpec(f"MailPlugin {name}: {fields}: {message}")


def check(plugin: Mapping[str, Any]) -> None:
    """Refuse a MailPlugin the services would refuse, naming its field: the CRD's rules (for
    one stored before they were, or by an API server that does not check them) and the
    services' own model of a plugin, for what can be checked outside the pod."""
    name = plugin["metadata"]["name"]
    spec = _spec(plugin)
    endpoint = spec.get("endpoint") or {}
    ways = [f"spec.{key}" for key in ("endpoint", "module", "library") if spec.get(key)]
    hooks = [str(hook) for hook in spec.get("hooks") or []]
    validating = any(hook in (*contract.HOOKS, "helo") for hook in hooks)
    if len(ways) > 1 or (not ways and validating):
        found = ", ".join(ways) or "none"
        raise _refuse(
            name,
            "spec.endpoint, spec.module, spec.library",
            f"set exactly one (found {found}; only event hooks need none)",
        )
    if not hooks and not spec.get("library"):
        raise _refuse(name, "spec.hooks", "required (a C module's library may declare its own)")
    if (spec.get("options") is not None or spec.get("optionsSecret")) and not spec.get("module"):
        raise _refuse(
            name, "spec.options, spec.optionsSecret", "for an in-process plugin (spec.module)"
        )
    if endpoint and ("url" in endpoint) == ("subject" in endpoint):
        raise _refuse(name, "spec.endpoint", "set exactly one of url and subject")
    url = str(endpoint.get("url") or "")
    for key in ("caSecret", "caConfigMap", "secretRef"):
        if endpoint.get(key) and not url:
            raise _refuse(name, f"spec.endpoint.{key}", "for an HTTP plugin (spec.endpoint.url)")
    if endpoint.get("caSecret") and endpoint.get("caConfigMap"):
        raise _refuse(name, "spec.endpoint.caSecret, spec.endpoint.caConfigMap", "set one")
    if (endpoint.get("caSecret") or endpoint.get("caConfigMap")) and not url.startswith("https://"):
        raise _refuse(name, "spec.endpoint.url", "a CA is for an https:// url")
    for key in ("caSecret", "caConfigMap", "secretRef"):
        reference = endpoint.get(key)
        if reference and _key_of(reference).strip(".") == "":
            raise _refuse(name, f"spec.endpoint.{key}.key", "not a key of a Secret or ConfigMap")
    library = spec.get("library")
    if library:
        path = str(library.get("path") or "")
        if (
            not path.startswith("/")
            or ".." in path.split("/")
            or posixpath.basename(path)
            in (
                "",
                ".",
            )
        ):
            raise _refuse(name, "spec.library.path", f"an absolute path to a file, not {path!r}")
    checkable = {key: value for key, value in entry(plugin).items() if key not in POD_LOCAL}
    if library:
        return  # a C module: its library is checked where it is, by ingress at start
    try:
        settings_module.Plugin.model_validate(checkable)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'spec'}: "
            + item["msg"].removeprefix("Value error, ")
            for item in error.errors()
        )
        raise _refuse(name, "spec", problems) from None


@dataclass(slots=True)
class PodParts:
    """What ingress's pod gets for its plugins: volumes, its container's mounts, and the init
    containers that copy C modules' libraries out of their images."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, volume: dict[str, Any], mount_path: str) -> None:
        self.volumes.append(volume)
        self.mounts.append({"name": volume["name"], "mountPath": mount_path, "readOnly": True})


def _volume_name(plugin: str, purpose: str) -> str:
    """A volume name (a DNS label) for any MailPlugin name, which may be longer or dotted."""
    digest = hashlib.sha256(plugin.encode()).hexdigest()[:10]
    return f"plugin-{digest}-{purpose}"


# Secret and ConfigMap files readable by the pod's group (the services' fsGroup) alone.
FILE_MODE = 0o440


def pod_parts(plugins: Sequence[Mapping[str, Any]]) -> PodParts:
    """What ingress's pod needs for `plugins` (the selected MailPlugins). The init containers
    get the services' own hardening where the pod is made (`workloads.ingress`)."""
    parts = PodParts()
    for plugin in sorted(plugins, key=lambda p: str(p["metadata"]["name"])):
        name = plugin["metadata"]["name"]
        spec = _spec(plugin)
        endpoint = spec.get("endpoint") or {}
        reference = endpoint.get("secretRef")
        if reference:
            item = {"key": reference["key"], "path": reference["key"]}
            secret = {"secretName": reference["name"], "items": [item], "defaultMode": FILE_MODE}
            parts.add(
                {"name": _volume_name(name, "secret"), "secret": secret},
                f"{directory(name)}/secret",
            )
        for key, kind, field_name in (
            ("caSecret", "secret", "secretName"),
            ("caConfigMap", "configMap", "name"),
        ):
            reference = endpoint.get(key)
            if reference:
                item = {"key": _key_of(reference), "path": _key_of(reference)}
                source = {field_name: reference["name"], "items": [item], "defaultMode": FILE_MODE}
                parts.add({"name": _volume_name(name, "ca"), kind: source}, f"{directory(name)}/ca")
        if spec.get("optionsSecret"):
            secret = {"secretName": spec["optionsSecret"]["name"], "defaultMode": FILE_MODE}
            parts.add(
                {"name": _volume_name(name, "options"), "secret": secret},
                f"{directory(name)}/options",
            )
        library = spec.get("library")
        if library:
            volume = _volume_name(name, "lib")
            parts.add(
                {"name": volume, "emptyDir": {"sizeLimit": "256Mi"}}, f"{directory(name)}/lib"
            )
            copy = f"{COPY_TO}/{posixpath.basename(library['path'])}"
            parts.init_containers.append(
                {
                    "name": volume,
                    "image": library["image"],
                    "imagePullPolicy": library["pullPolicy"],
                    "command": ["cp", library["path"], copy],
                    "volumeMounts": [{"name": volume, "mountPath": COPY_TO}],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"memory": "64Mi"},
                    },
                }
            )
    return parts
