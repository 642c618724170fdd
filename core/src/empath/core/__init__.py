"""Empath core: what every service shares (events, settings, bus, store, telemetry, CLI)."""

__all__ = [
    "addresses",
    "bus",
    "cli",
    "errors",
    "events",
    "ids",
    "kubenames",
    "logs",
    "names",
    "queue",
    "services",
    "settings",
    "store",
    "telemetry",
    "up",
]
