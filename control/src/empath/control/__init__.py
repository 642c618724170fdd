"""Empath control: the HTTP management API and its command-line clients."""

__all__ = ["api", "audit", "ctl", "service"]
