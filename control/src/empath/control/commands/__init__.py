"""The command groups of `empathctl` and `kubectl empath`, one module each."""

__all__ = ["dns", "plugins", "queue", "system"]
