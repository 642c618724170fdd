"""Who decides how many delivery workers run: KEDA on the queue's backlog, else an HPA on CPU.

KEDA scales on what delivery is behind by (the JetStream consumer's pending messages, read
from NATS's monitoring port); it is used when the cluster serves ScaledObjects and the
monitoring endpoint is known. Otherwise a HorizontalPodAutoscaler scales on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def autoscaler(body: Mapping[str, Any], *, keda: bool) -> tuple[str, dict[str, Any] | None]:
    """Which autoscaler the delivery Deployment gets (`none`, `keda` or `hpa`), and it."""
    spec = body["spec"]
    scaling = spec["autoscaling"]
    server = body["metadata"]["name"]
    delivery = workloads.name(server, "delivery")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": delivery}
    if not scaling["enabled"]:
        return "none", None
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
                "triggers": [
                    {
                        "type": "nats-jetstream",
                        "metadata": {
                            "natsServerMonitoringEndpoint": endpoint,
                            "account": "$G",
                            "stream": names.JOBS_STREAM.name,
                            "consumer": names.DELIVERY_JOBS_CONSUMER,
                            "lagThreshold": str(scaling["backlogPerWorker"]),
                        },
                    }
                ],
            },
        )
        return "keda", scaled
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
    return "hpa", hpa
