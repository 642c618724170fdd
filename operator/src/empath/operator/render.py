"""A MailServer (and the MailPlugins it selects) as the Kubernetes objects that run it.

Pure functions: `render` takes the resource as the API server stores it and returns every
object the operator applies, so what a spec means can be read (and tested) in one place.
The pieces are in the modules named for them (`configmap`, `workloads`, `services`,
`autoscaling`, `monitors`); this one says which pieces a spec makes, in the order they are applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from empath.core import kubenames
from empath.operator import (
    autoscaling,
    configmap,
    crds,
    metadata,
    monitors,
    plugins,
    services,
    workloads,
)


@dataclass(frozen=True, slots=True)
class Options:
    """What the installation decides for every MailServer (the operator's own settings)."""

    image: str
    otlp_endpoint: str | None = None
    keda: bool = False
    # A PodMonitor for each MailServer: asked for, and the cluster serves PodMonitors.
    pod_monitor: bool = False
    pull_secrets: tuple[str, ...] = ()
    # The operator key: each control token Secret it creates holds the token derived from it
    # (`plugincalls.control_token`), so that it can call control without reading Secrets.
    control_key: bytes | None = None


@dataclass(slots=True)
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    token_secret: dict[str, Any] = field(default_factory=dict)
    # The event keys of ingress and the spool: made once, like the token (`signing`).
    event_keys_secret: dict[str, Any] = field(default_factory=dict)
    autoscaler: str = "none"
    autoscaler_reason: str = ""
    # KEDA is installed but not used: the reconcile warns.
    autoscaler_fallback: bool = False
    plugins: list[str] = field(default_factory=list)
    config_hash: str = ""

    def named(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise LookupError(f"{kind}/{name}")


def complete(spec: Mapping[str, Any], options: Options) -> dict[str, Any]:
    """The spec with the schema's defaults, and the installation's image and pull secrets
    unless the MailServer names its own."""
    found = crds.with_defaults(crds.schema(crds.MAILSERVERS)["properties"]["spec"], spec)
    found["image"] = found.get("image") or options.image
    found["imagePullSecrets"] = found.get("imagePullSecrets") or [
        {"name": name} for name in options.pull_secrets
    ]
    return dict(found)


def render(
    body: Mapping[str, Any], selected: list[Mapping[str, Any]], options: Options
) -> Rendered:
    """Every object of a MailServer; raises `configmap.InvalidSpec` (the spec passed the CRD's
    schema but not the services' settings) and renders nothing on a bad spec. `selected` are
    the MailPlugins it selects (`plugins.selected`)."""
    spec = complete(body["spec"], options)
    body = {**body, "spec": spec}
    server = body["metadata"]["name"]
    for plugin in selected:
        plugins.check(plugin)
    entries = plugins.settings(selected)
    data = configmap.config(spec, entries, otlp_endpoint=options.otlp_endpoint)
    configmap.check(data)
    configmap.check_listeners(spec)
    rendered = Rendered(plugins=[entry["name"] for entry in entries])
    digest = configmap.config_hash(data, spec["listeners"], spec["nats"], spec["objectStore"])
    rendered.config_hash = digest
    choice = autoscaling.autoscaler(body, keda=options.keda)
    rendered.autoscaler, scaler = choice.kind, choice.scaler
    rendered.autoscaler_reason, rendered.autoscaler_fallback = choice.reason, choice.fallback
    rendered.objects += [
        metadata.owned(body, "v1", "ConfigMap", configmap.name(server), None, data=data),
        workloads.ingress(body, digest, plugins.pod_parts(selected)),
        services.smtp(body),
        workloads.control(body, digest),
        services.control(body),
        workloads.spool(body, digest),
        workloads.delivery(body, digest, autoscaled=scaler is not None),
    ]
    if scaler:
        rendered.objects.append(scaler)
    rendered.objects += [
        workloads.disruption_budget(body, component) for component in metadata.COMPONENTS
    ]
    if options.pod_monitor:
        rendered.objects.append(monitors.pod_monitor(body))
    rendered.token_secret = metadata.owned(
        body, "v1", "Secret", kubenames.control_token_secret(server), "control", type="Opaque"
    )
    rendered.event_keys_secret = metadata.owned(
        body, "v1", "Secret", kubenames.event_keys_secret(server), None, type="Opaque"
    )
    return rendered
