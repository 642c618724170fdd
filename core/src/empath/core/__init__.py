"""Empath core: what every service shares (events, settings, bus, store, telemetry, CLI)."""

__all__ = [
    "addresses",
    "bus",
    "cli",
    "consumers",
    "errors",
    "events",
    "ids",
    "kubenames",
    "logs",
    "names",
    "periodic",
    "queue",
    "services",
    "settings",
    "store",
    "telemetry",
    "up",
]
