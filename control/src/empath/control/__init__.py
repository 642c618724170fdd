"""Empath control: the HTTP management API and its command-line clients."""

__all__ = [
    "api",
    "audit",
    "calls",
    "commands",
    "ctl",
    "dns",
    "kube",
    "openapi",
    "output",
    "queue",
    "service",
    "system",
    "transport",
]
