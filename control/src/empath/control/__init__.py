"""Empath control: the HTTP management API and its command-line clients."""

__all__ = [
    "api",
    "audit",
    "calls",
    "commands",
    "ctl",
    "dns",
    "kube",
    "link",
    "openapi",
    "output",
    "plugins",
    "queue",
    "service",
    "system",
    "tokens",
    "transport",
]
