"""Empath's Kubernetes operator: MailServer and MailPlugin custom resources (kopf)."""

__all__ = [
    "autoscaling",
    "configmap",
    "crds",
    "handlers",
    "kube",
    "main",
    "metadata",
    "metrics",
    "monitors",
    "plugincalls",
    "plugins",
    "pluginstatus",
    "reconcile",
    "render",
    "services",
    "status",
    "workloads",
]
