"""Queue statistics as `empathctl stats` shows them: by state, by domain and age, the oldest."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from empath.core import events, ids, queue
from empath.spool import stats as queue_stats
from empath.spool import view
from tests.unit.spool.samples import NOW, entry, recipient


def stats(entries: list[queue.Entry]) -> dict[str, Any]:
    summaries = [view.Summary.of(e) for e in entries]
    return queue_stats.summary(summaries, now=NOW, frozen=False).model_dump()


def received(
    minutes_ago: float, *recipients: str | queue.RecipientState, **fields: Any
) -> queue.Entry:
    """A message received that long ago, with a queue id of that time (ids sort by time)."""
    at: datetime = NOW - timedelta(minutes=minutes_ago)
    fields.setdefault("state", queue.State.DEFERRED)
    return entry(
        *recipients,
        id=ids.new_id(int(at.timestamp() * 1e9)),
        received_at=at,
        **fields,
    )


def test_messages_are_counted_by_state_with_every_state_named() -> None:
    counts = stats(
        [
            received(1, state=queue.State.QUEUED),
            received(2, state=queue.State.DEFERRED),
            received(3, state=queue.State.DEFERRED),
            received(4, state=queue.State.DELIVERED),
        ]
    )

    assert counts["by_state"] == {
        "queued": 1,
        "deferred": 2,
        "delivering": 0,
        "delivered": 1,
        "failed": 0,
        "frozen": 0,
    }
    assert counts["total"] == 4
    assert counts["waiting"] == 3  # the delivered one is done


def test_an_empty_queue_has_no_oldest_message() -> None:
    counts = stats([])

    assert counts["total"] == counts["waiting"] == 0
    assert counts["oldest"] is None
    assert counts["by_domain"] == {}
    assert counts["ages"] == [0] * len(counts["buckets"])


def test_the_oldest_is_the_oldest_message_still_waiting() -> None:
    done = received(600, state=queue.State.FAILED)
    oldest = received(90)
    counts = stats([received(5), oldest, done, received(30)])

    assert counts["oldest"] == {"id": oldest.id, "age_seconds": 90 * 60}


@pytest.mark.parametrize(
    ("minutes", "label"),
    [
        (0, "T"),
        (4.9, "T"),
        (5, "5"),
        (19.9, "10"),
        (20, "20"),
        (1279, "640"),
    ],
)
def test_waiting_messages_fall_into_qshape_age_buckets(minutes: float, label: str) -> None:
    counts = stats([received(minutes)])

    ages = dict(zip(counts["buckets"], counts["ages"], strict=True))
    assert ages == {name: int(name == label) for name in counts["buckets"]}


def test_the_buckets_are_those_of_postfix_qshape() -> None:
    assert stats([])["buckets"] == [
        "T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"
    ]  # fmt: skip


def test_each_domain_counts_the_messages_still_open_for_it() -> None:
    counts = stats(
        [
            received(1, "bob@example.com", "Dave@EXAMPLE.com"),  # one message for example.com
            received(1, "u@EXAMPLE.COM", "carol@example.net"),
            received(1, recipient("x@example.org", status="delivered"), "y@example.net"),
            received(1, "z@example.com", state=queue.State.DELIVERED),  # done: not waiting
        ]
    )

    assert counts["by_domain"] == {
        "example.com": {"total": 2, "ages": [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]},
        "example.net": {"total": 2, "ages": [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]},
    }


def test_the_busiest_domain_comes_first() -> None:
    counts = stats(
        [
            received(1, "a@small.example"),
            received(1, "a@big.example"),
            received(30, "b@big.example"),
        ]
    )

    assert list(counts["by_domain"]) == ["big.example", "small.example"]
    assert counts["by_domain"]["big.example"]["ages"][:4] == [1, 0, 0, 1]


def test_a_domain_with_a_trailing_dot_counts_under_the_domain() -> None:
    counts = stats([received(1, "U@EXAMPLE.COM."), received(1, "v@example.com")])

    assert list(counts["by_domain"]) == ["example.com"]
    assert counts["by_domain"]["example.com"]["total"] == 2


def test_a_message_older_than_1280_minutes_counts_under_1280_plus() -> None:
    counts = stats([received(1280), received(60 * 24 * 30)])

    ages = dict(zip(counts["buckets"], counts["ages"], strict=True))
    assert ages["1280+"] == 2
    assert ages["1280"] == 0


def attempt(minutes_ago: float, *results: tuple[str, str]) -> queue.AttemptRecord:
    """An attempt that ended that long ago, with (address, outcome) per recipient."""
    at = NOW - timedelta(minutes=minutes_ago)
    replies = {"delivered": "250 2.0.0 Ok", "deferred": "451 4.3.0 Later", "failed": "550 5.1.1 No"}
    return queue.AttemptRecord(
        attempt=1,
        started_at=at - timedelta(seconds=1),
        finished_at=at,
        worker="worker-1",
        results=tuple(
            events.RecipientResult(address=a, outcome=o, reply=replies[o])  # type: ignore[arg-type]
            for a, o in results
        ),
    )


def test_the_activity_counts_what_came_in_and_each_recipients_outcome_in_the_window() -> None:
    entries = [
        received(
            3,
            "a@ok.test",
            "b@bad.test",
            state=queue.State.DEFERRED,
            history=(attempt(2, ("a@ok.test", "delivered"), ("b@bad.test", "deferred")),),
            updated_at=NOW - timedelta(minutes=2),
        ),
        received(
            10,
            "c@bad.test",
            state=queue.State.FAILED,
            history=(
                attempt(9, ("c@bad.test", "deferred")),
                attempt(1, ("c@bad.test", "failed")),
            ),
            updated_at=NOW - timedelta(minutes=1),
        ),
        # Received and delivered before the window: neither counts.
        received(
            60,
            "d@ok.test",
            state=queue.State.DELIVERED,
            history=(attempt(59, ("d@ok.test", "delivered")),),
            updated_at=NOW - timedelta(minutes=59),
        ),
    ]
    found = queue_stats.activity([view.Summary.of(e) for e in entries], now=NOW, minutes=15)
    assert (found.received, found.received_per_minute) == (2, round(2 / 15, 2))
    assert (found.delivered, found.deferred, found.failed) == (1, 2, 1)
    assert found.failure_ratio == 0.5
    assert found.by_domain["bad.test"].model_dump() == {
        "delivered": 0,
        "deferred": 2,
        "failed": 1,
        "failure_ratio": 1.0,
    }
    assert found.by_domain["ok.test"].failure_ratio == 0.0
    assert list(found.by_domain) == ["bad.test", "ok.test"]  # the busiest first


def test_a_quiet_queue_has_no_failure_ratio_rather_than_zero() -> None:
    found = queue_stats.activity([received(1, state=queue.State.QUEUED)], now=NOW, minutes=15)
    assert (found.received, found.delivered, found.failed) == (1, 0, 0)
    assert found.failure_ratio is None
    assert found.by_domain == {}
