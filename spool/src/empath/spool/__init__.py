"""Empath spool: message bodies in the bucket, the queue state in NATS KV."""

__all__ = [
    "api",
    "controls",
    "dsn",
    "intake",
    "notices",
    "outcomes",
    "records",
    "removals",
    "retries",
    "scheduler",
    "service",
    "stats",
    "view",
]
