"""Empath delivery: outbound SMTP workers that share one durable JetStream consumer."""

__all__ = ["client", "pool", "resolver", "service", "throttle", "tls", "worker"]
