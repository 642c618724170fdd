"""Empath delivery: outbound SMTP workers that share one durable JetStream consumer."""

__all__ = [
    "checks",
    "circuit",
    "client",
    "limits",
    "pool",
    "resolver",
    "service",
    "throttle",
    "tls",
    "worker",
]
