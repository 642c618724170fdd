"""A MailServer's PodMonitor: how the Prometheus operator finds its services' `/metrics`.

Made when the installation asks for it (the chart's `observability.podMonitor.enabled`) and
the cluster serves PodMonitors (the Prometheus operator's CRDs are installed): without them
the object could not be made, and a MailServer must not fail for lack of a monitoring stack.
One PodMonitor selects every pod of the MailServer (each serves `/metrics` on its health
port) and labels the series with the MailServer's name, so that two MailServers of one
namespace stay apart in the dashboard and the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from empath.operator import metadata

# The Prometheus operator's PodMonitors: their API version, and the plural served under it.
POD_MONITORS = ("monitoring.coreos.com/v1", "podmonitors")


def pod_monitor(body: Mapping[str, Any]) -> dict[str, Any]:
    """The PodMonitor of MailServer `body`: its pods' health port, path `/metrics`."""
    server = body["metadata"]["name"]
    return metadata.owned(
        body,
        POD_MONITORS[0],
        "PodMonitor",
        server,
        None,
        spec={
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": server,
                    metadata.MANAGED_BY_LABEL: metadata.MANAGED_BY,
                }
            },
            "podMetricsEndpoints": [
                {
                    "port": "health",
                    "path": "/metrics",
                    "relabelings": [
                        {"targetLabel": "mailserver", "replacement": server},
                        {
                            "sourceLabels": [
                                "__meta_kubernetes_pod_label_app_kubernetes_io_component"
                            ],
                            "targetLabel": "service",
                        },
                    ],
                }
            ],
        },
    )
