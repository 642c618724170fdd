"""Queue statistics: counts by state and by domain, the oldest message, and age buckets in the
manner of Postfix's qshape (minutes: under 5, 5, 10, 20, ... 1280, and older), and the domains
whose delivery circuit breaker is open (delivery keeps them in the limits bucket); and, for
`system status`, the recent activity: what came in and what each attempt's recipients became.

The activity is read from the records (finished ones are kept for `finished_retention`), not
from the services' metrics: every spool replica holds the whole queue, so one answer covers
every ingress and delivery pod, wherever they run, with no scraping and no history to keep.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from empath.core import addresses, bus, names, queries, queue
from empath.spool import view

log = logging.getLogger("empath.spool.stats")

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


def circuits(records: Iterable[tuple[str, bytes]]) -> list[queries.Circuit]:
    """The circuit records that are not closed, most failures first."""
    found = []
    for _, value in records:
        try:
            record = json.loads(value)
            if record.get("state") in ("open", "half-open"):
                found.append(
                    queries.Circuit(
                        domain=str(record["domain"]),
                        state=record["state"],
                        failures=len(record.get("failures", [])),
                        until=datetime.fromtimestamp(float(record["until"]), UTC),
                        reason=str(record.get("reason", "")),
                    )
                )
        except (ValueError, KeyError, TypeError) as error:
            log.warning("a circuit record does not load: %r", error)
    return sorted(found, key=lambda circuit: (-circuit.failures, circuit.domain))


async def read_circuits(js: JetStreamContext) -> list[queries.Circuit]:
    """What delivery's circuit breakers say now; none while delivery has not made the bucket,
    or when it cannot be read (the stats answer without them rather than not at all)."""
    try:
        kv = await js.key_value(names.LIMITS_BUCKET)
        return circuits(await bus.kv_items(kv, f"{names.CIRCUIT_KEY_PREFIX}>"))
    except nats.js.errors.BucketNotFoundError:
        return []
    except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
        log.warning("cannot read the circuit breakers: %r", error)
        return []


def summary(
    entries: list[view.Summary],
    *,
    now: datetime,
    frozen: bool,
    circuits: Sequence[queries.Circuit] = (),
) -> queries.StatsAnswer:
    """What `queue stats` shows: counts by state, the waiting ones by age and by domain."""
    by_state = collections.Counter(entry.state.value for entry in entries)
    waiting = [entry for entry in entries if not entry.finished]
    totals = [0] * len(LABELS)
    by_domain: dict[str, list[int]] = collections.defaultdict(lambda: [0] * len(LABELS))
    for entry in waiting:
        index = bucket((now - entry.received_at).total_seconds() / 60)
        totals[index] += 1
        for domain in entry.open_domains:
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
        circuits=list(circuits),
    )


ACTIVITY_DOMAINS = 20


def _ratio(failed: int, delivered: int) -> float | None:
    return round(failed / (failed + delivered), 4) if failed + delivered else None


def activity(entries: list[view.Summary], *, now: datetime, minutes: int) -> queries.Activity:
    """Messages received and recipients attempted in the last `minutes`, by domain (only the
    records changed in the window are read whole)."""
    since = now - timedelta(minutes=minutes)
    received = 0
    outcomes: collections.Counter[str] = collections.Counter()
    by_domain: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for summary in entries:
        if summary.received_at >= since:
            received += 1
        if summary.updated_at is None or summary.updated_at < since:
            continue  # nothing changed in the window: no attempt ended in it
        for attempt in summary.entry().history:
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
