"""Empath ingress: the SMTP server that accepts mail into the queue."""

__all__ = [
    "builtin",
    "cmodules",
    "credentials",
    "cshim",
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
