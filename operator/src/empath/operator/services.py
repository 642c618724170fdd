"""The Services in front of a MailServer's pods: SMTP for the world, control for `kubectl`.

The SMTP Service is what the spec's listeners describe (its type, traffic policy and
annotations are the cloud's business); the control Service is ClusterIP only, reached through
the API server's proxy under the names `kubectl empath` looks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from empath.core import kubenames
from empath.operator import metadata


def smtp_name(server: str) -> str:
    """The SMTP Service, whose address the MailServer's status reports as its endpoint."""
    return f"{server}-smtp"


def smtp(body: Mapping[str, Any]) -> dict[str, Any]:
    """SMTP (and submission, when enabled) on the ports the spec gives them."""
    server = body["metadata"]["name"]
    listeners = body["spec"]["listeners"]
    service_spec = listeners["service"]
    submission = listeners["submission"]
    service_ports = [
        {"name": "smtp", "port": listeners["smtp"]["port"], "targetPort": "smtp", "protocol": "TCP"}
    ]
    if submission["enabled"]:
        service_ports.append(
            {
                "name": "submission",
                "port": submission["port"],
                "targetPort": "submission",
                "protocol": "TCP",
            }
        )
    service = metadata.owned(
        body,
        "v1",
        "Service",
        smtp_name(server),
        "ingress",
        spec={
            "type": service_spec["type"],
            "externalTrafficPolicy": service_spec["externalTrafficPolicy"],
            "selector": metadata.selector(server, "ingress"),
            "ports": service_ports,
        },
    )
    if service_spec.get("annotations"):
        service["metadata"]["annotations"] = dict(service_spec["annotations"])
    return service


def control(body: Mapping[str, Any]) -> dict[str, Any]:
    """`kubectl empath` reaches the control API through the API server's proxy, on the port
    named `http`."""
    server = body["metadata"]["name"]
    return metadata.owned(
        body,
        "v1",
        "Service",
        kubenames.control_service(server),
        "control",
        spec={
            "type": "ClusterIP",
            "selector": metadata.selector(server, "control"),
            "ports": [
                {
                    "name": kubenames.CONTROL_PORT_NAME,
                    "port": metadata.CONTROL_PORT,
                    "targetPort": kubenames.CONTROL_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    )
