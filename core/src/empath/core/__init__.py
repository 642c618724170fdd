"""Empath core: what every service shares (events, settings, bus, store, telemetry, CLI)."""

__all__ = [
    "addresses",
    "bus",
    "cli",
    "consumers",
    "dnscache",
    "errors",
    "events",
    "ids",
    "kubenames",
    "logs",
    "names",
    "periodic",
    "queries",
    "queue",
    "services",
    "settings",
    "store",
    "telemetry",
    "up",
]
