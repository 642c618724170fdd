"""The retry schedule and when a message has been tried long enough."""

from __future__ import annotations

from datetime import timedelta

import pytest

from empath.core import errors
from empath.spool import retries
from tests.unit.spool.samples import NOW, config, entry


def test_the_default_schedule_is_immediate_30s_2min_8min_30min_then_hourly() -> None:
    settings = config()
    waits = [
        retries.next_attempt(settings, attempts=attempts, now=NOW) - NOW for attempts in range(0, 9)
    ]

    assert waits == [
        timedelta(0),  # the first attempt: at once
        timedelta(seconds=30),
        timedelta(minutes=2),
        timedelta(minutes=8),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(hours=1),
        timedelta(hours=1),
        timedelta(hours=1),
    ]


def test_the_schedule_is_configurable_as_a_comma_list() -> None:
    settings = config(retry_schedule="0, 5,60")

    waits = [
        (retries.next_attempt(settings, attempts=a, now=NOW) - NOW).total_seconds()
        for a in range(5)
    ]

    assert waits == [0, 5, 60, 60, 60]


@pytest.mark.parametrize("schedule", ["", "30,-1"])
def test_an_empty_or_negative_schedule_is_refused(schedule: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="EMPATH_RETRY_SCHEDULE"):
        config(retry_schedule=schedule)


def test_a_message_expires_at_the_maximum_number_of_attempts() -> None:
    settings = config(max_attempts=5)

    assert retries.expired(settings, entry(attempts=4), now=NOW) is None
    assert retries.expired(settings, entry(attempts=5), now=NOW) == "gave up after 5 attempts"


def test_a_message_expires_at_the_maximum_queue_lifetime() -> None:
    settings = config(max_queue_lifetime=3600)
    young = entry(received_at=NOW - timedelta(minutes=59, seconds=59))
    old = entry(received_at=NOW - timedelta(hours=1))

    assert retries.expired(settings, young, now=NOW) is None
    assert retries.expired(settings, old, now=NOW) == "too long in the queue"


def test_by_default_a_message_is_kept_25_attempts_or_five_days() -> None:
    settings = config()

    assert retries.expired(settings, entry(attempts=24), now=NOW) is None
    assert retries.expired(settings, entry(attempts=25), now=NOW) is not None
    four_days = entry(received_at=NOW - timedelta(days=4, hours=23))
    assert retries.expired(settings, four_days, now=NOW) is None
    assert retries.expired(settings, entry(received_at=NOW - timedelta(days=5)), now=NOW)
