"""Queue statistics: counts by state and by domain, the oldest message, and age buckets in the
manner of Postfix's qshape (minutes: under 5, 5, 10, 20, ... 1280, and older); and, for
`system status`, the recent activity: what came in and what each attempt's recipients became.

The activity is read from the records (finished ones are kept for `finished_retention`), not
from the services' metrics: every spool replica holds the whole queue, so one answer covers
every ingress and delivery pod, wherever they run, with no scraping and no history to keep.
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta

from empath.core import addresses, queries, queue

BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
LABELS = ("T", *(str(b) for b in BUCKETS), "1280+")
OLDER = len(LABELS) - 1  # "1280+"


def bucket(age_minutes: float) -> int:
    """The index of the age label (0 is the newest).

    A label names the lower bound of its ages ("T" is under 5 minutes, "640" is 640 to 1280), so
    a message of 1280 minutes or more counts under "1280+", and the "1280" column, kept for the
    layout of qshape, stays empty.
    """
    for index, limit in enumerate(BUCKETS):
        if age_minutes < limit:
            return index
    return OLDER


def summary(entries: list[queue.Entry], *, now: datetime, frozen: bool) -> queries.StatsAnswer:
    """What `queue stats` shows: counts by state, the waiting ones by age and by domain."""
    by_state = collections.Counter(entry.state.value for entry in entries)
    waiting = [entry for entry in entries if not entry.finished]
    totals = [0] * len(LABELS)
    by_domain: dict[str, list[int]] = collections.defaultdict(lambda: [0] * len(LABELS))
    for entry in waiting:
        index = bucket((now - entry.received_at).total_seconds() / 60)
        totals[index] += 1
        for domain in {addresses.domain_of(r.address) for r in entry.open_recipients}:
            by_domain[domain][index] += 1
    oldest = min(waiting, key=lambda entry: entry.id, default=None)
    return queries.StatsAnswer(
        by_state={state.value: by_state.get(state.value, 0) for state in queue.State},
        total=len(entries),
        waiting=len(waiting),
        oldest=None
        if oldest is None
        else queries.Oldest(id=oldest.id, age_seconds=(now - oldest.received_at).total_seconds()),
        buckets=list(LABELS),
        ages=totals,
        by_domain={
            domain: queries.DomainAges(total=sum(counts), ages=counts)
            for domain, counts in sorted(by_domain.items(), key=lambda item: -sum(item[1]))
        },
        frozen=frozen,
    )


ACTIVITY_DOMAINS = 20


def _ratio(failed: int, delivered: int) -> float | None:
    return round(failed / (failed + delivered), 4) if failed + delivered else None


def activity(entries: list[queue.Entry], *, now: datetime, minutes: int) -> queries.Activity:
    """Messages received and recipients attempted in the last `minutes`, by domain."""
    since = now - timedelta(minutes=minutes)
    received = 0
    outcomes: collections.Counter[str] = collections.Counter()
    by_domain: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for entry in entries:
        if entry.received_at >= since:
            received += 1
        if entry.updated_at is not None and entry.updated_at < since:
            continue  # nothing changed in the window: no attempt ended in it
        for attempt in entry.history:
            if attempt.finished_at < since:
                continue
            for result in attempt.results:
                outcomes[result.outcome] += 1
                by_domain[addresses.domain_of(result.address)][result.outcome] += 1
    busiest = sorted(by_domain.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return queries.Activity(
        minutes=minutes,
        received=received,
        received_per_minute=round(received / minutes, 2),
        delivered=outcomes["delivered"],
        delivered_per_minute=round(outcomes["delivered"] / minutes, 2),
        deferred=outcomes["deferred"],
        failed=outcomes["failed"],
        failure_ratio=_ratio(outcomes["failed"], outcomes["delivered"]),
        by_domain={
            domain: queries.DomainActivity(
                delivered=counts["delivered"],
                deferred=counts["deferred"],
                failed=counts["failed"],
                failure_ratio=_ratio(counts["failed"], counts["delivered"]),
            )
            for domain, counts in busiest[:ACTIVITY_DOMAINS]
        },
        domains_omitted=max(0, len(busiest) - ACTIVITY_DOMAINS),
    )
