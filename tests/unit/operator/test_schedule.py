"""When a MailServer is reconciled again: after a failure, with a growing delay (1 s,
2 s, 4 s ... capped at 5 minutes); after a success, at the resync."""

from __future__ import annotations

import time

import pytest

from empath.operator import handlers, main

KEY = ("mail", "corp")


def test_retries_back_off_doubling_up_to_a_cap() -> None:
    assert [handlers.backoff(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert handlers.backoff(30) == handlers.BACKOFF_CAP == 300


def test_a_failure_makes_the_server_due_after_the_backoff_and_a_success_resets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    schedule = handlers.Schedule(resync=300)
    assert not schedule.is_due(KEY)  # first seen: due at the resync
    assert schedule.failed(KEY) == 1
    assert schedule.failed(KEY) == 2
    now[0] += 1.5
    assert not schedule.is_due(KEY)
    now[0] += 0.5
    assert schedule.is_due(KEY)
    schedule.done(KEY)
    assert schedule.failed(KEY) == 1  # counted again from the start
    schedule.done(KEY)
    now[0] += 299
    assert not schedule.is_due(KEY)
    now[0] += 1
    assert schedule.is_due(KEY)
    schedule.forget(KEY)
    assert KEY not in schedule.due


def test_the_resync_interval_is_a_setting() -> None:
    assert main_settings(resync_seconds=30).resync_seconds == 30
    assert main_settings().resync_seconds == 300
    assert main_settings().apply_crds is True


def main_settings(**options: float) -> main.OperatorSettings:
    return main.OperatorSettings(image="x", **options)
