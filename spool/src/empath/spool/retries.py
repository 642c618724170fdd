"""The retry schedule and message expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

from empath.core import queue
from empath.core.settings import Settings


def next_attempt(settings: Settings, *, attempts: int, now: datetime) -> datetime:
    """When to try again after `attempts` attempts (schedule[0] is the first attempt's)."""
    schedule = settings.retry_schedule
    return now + timedelta(seconds=schedule[min(attempts, len(schedule) - 1)])


def expired(settings: Settings, entry: queue.Entry, *, now: datetime) -> str | None:
    """Why a message may not be tried again, or None."""
    if entry.attempts >= settings.max_attempts:
        return f"gave up after {entry.attempts} attempts"
    if (now - entry.received_at).total_seconds() >= settings.max_queue_lifetime:
        return "too long in the queue"
    return None
