"""Empath ingress: the SMTP server that accepts mail into the queue."""

__all__ = [
    "bodies",
    "credentials",
    "handlers",
    "hooks",
    "limits",
    "plugins",
    "policies",
    "protocol",
    "reload",
    "replies",
    "service",
    "syntax",
    "transports",
]
