"""Empath core: what every service shares (events, settings, bus, store, telemetry, CLI)."""

__all__ = [
    "bus",
    "cli",
    "dnscache",
    "errors",
    "events",
    "ids",
    "kubenames",
    "logs",
    "names",
    "queries",
    "queue",
    "services",
    "settings",
    "store",
    "telemetry",
    "up",
]
