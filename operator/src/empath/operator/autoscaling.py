"""Who decides how many delivery workers run: KEDA on the queue's backlog, else an HPA on CPU.

KEDA scales on what delivery is behind by (the JetStream consumer's pending messages, read
from NATS's monitoring port); it is used when the cluster serves ScaledObjects and the
monitoring endpoint is known. Otherwise a HorizontalPodAutoscaler scales on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from empath.core import names
from empath.operator import metadata, workloads

# KEDA's ScaledObjects: their API version, and the plural the cluster serves them under.
KEDA = ("keda.sh/v1alpha1", "scaledobjects")


def monitoring_endpoint(spec: Mapping[str, Any]) -> str | None:
    """Where KEDA reads the JetStream consumer's backlog (NATS's monitoring port)."""
    nats = spec["nats"]
    if nats.get("monitoringEndpoint"):
        return str(nats["monitoringEndpoint"])
    if nats.get("url"):
        host = urlsplit(nats["url"].split(",")[0].strip()).hostname
        return f"{host}:8222" if host else None
    return None


@dataclass(frozen=True, slots=True)
class Choice:
    """Which autoscaler the delivery Deployment gets (`none`, `keda` or `hpa`), it, and why;
    `fallback` when KEDA is installed but cannot be used (delivery then scales on CPU, which
    barely moves while its work waits on remote servers)."""

    kind: str
    scaler: dict[str, Any] | None
    reason: str
    fallback: bool = False


def trigger(spec: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """KEDA's nats-jetstream trigger on the delivery consumer's backlog."""
    scaling = spec["autoscaling"]
    options = scaling["keda"]
    found: dict[str, Any] = {
        "type": "nats-jetstream",
        "metadata": {
            "natsServerMonitoringEndpoint": endpoint,
            "account": options["account"],
            "stream": names.JOBS_STREAM.name,
            "consumer": names.DELIVERY_JOBS_CONSUMER,
            "lagThreshold": str(scaling["backlogPerWorker"]),
        },
    }
    if options["useHttps"]:
        found["metadata"]["useHttps"] = "true"
    if options.get("authenticationRef"):
        found["authenticationRef"] = dict(options["authenticationRef"])
    return found


def autoscaler(body: Mapping[str, Any], *, keda: bool) -> Choice:
    """Which autoscaler the delivery Deployment gets, and why."""
    spec = body["spec"]
    scaling = spec["autoscaling"]
    server = body["metadata"]["name"]
    delivery = workloads.name(server, "delivery")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": delivery}
    if not scaling["enabled"]:
        return Choice("none", None, "autoscaling is off: spec.services.delivery.replicas")
    endpoint = monitoring_endpoint(spec)
    if keda and endpoint:
        scaled = metadata.owned(
            body,
            KEDA[0],
            "ScaledObject",
            delivery,
            "delivery",
            spec={
                "scaleTargetRef": {"name": delivery},
                "minReplicaCount": scaling["minReplicas"],
                "maxReplicaCount": scaling["maxReplicas"],
                "triggers": [trigger(spec, endpoint)],
            },
        )
        return Choice("keda", scaled, f"KEDA on the delivery backlog, read from {endpoint}")
    hpa = metadata.owned(
        body,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        delivery,
        "delivery",
        spec={
            "scaleTargetRef": target,
            "minReplicas": scaling["minReplicas"],
            "maxReplicas": scaling["maxReplicas"],
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling["targetCPUUtilization"],
                        },
                    },
                }
            ],
        },
    )
    if keda:
        reason = (
            "KEDA is installed but the NATS monitoring endpoint is unknown (the URL comes from "
            "spec.nats.urlSecret): set spec.nats.monitoringEndpoint to scale on the backlog; "
            "scaling on CPU meanwhile"
        )
        return Choice("hpa", hpa, reason, fallback=True)
    return Choice("hpa", hpa, "KEDA is not installed: scaling on CPU")
