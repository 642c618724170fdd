"""The instruments record what happened, read back as a scraper reads them from `/metrics`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats.js.errors

from empath.core import dnscache, events, metrics, queue
from empath.delivery import resolver, throttle, worker
from empath.spool import records
from tests.counters import scraped
from tests.unit.spool import samples


def test_the_dns_cache_counts_its_hits_misses_and_evictions() -> None:
    hits, misses, evictions = (
        scraped(f"empath_dns_cache_{n}_total") for n in ("hits", "misses", "evictions")
    )
    cache = resolver.Cache(size=1)
    assert cache.get("mx.example.com") is None
    answer = dnscache.Record.answer(["127.0.0.2"], ttl=60)
    cache.put("mx.example.com", answer)
    assert cache.get("mx.example.com") == answer
    cache.put("mx.example.org", dnscache.Record.failure("550 5.1.2 No such domain", ttl=60))
    assert scraped("empath_dns_cache_hits_total") == hits + 1
    assert scraped("empath_dns_cache_misses_total") == misses + 1
    assert scraped("empath_dns_cache_evictions_total") == evictions + 1


async def test_a_message_held_back_by_the_domains_rate_is_counted_as_rate_limited() -> None:
    before = scraped("empath_delivery_rate_limited_total", limit="rate")
    pacing = throttle.Throttle(connections=1, rate=1000)
    await pacing.pace("example.com")
    await pacing.pace("example.com")
    assert scraped("empath_delivery_rate_limited_total", limit="rate") == before + 1


def test_an_attempt_counts_each_recipient_by_outcome_and_reply_class() -> None:
    labels = {"status_class": "4xx", "enhanced": "4.2", "tls": "yes"}
    retrying = scraped("empath_delivery_messages_retrying_total", **labels)
    delivered = scraped("empath_delivery_messages_delivered_total", status_class="2xx")
    attempts = scraped("empath_delivery_attempts_total", outcome="deferred")
    results = [
        events.RecipientResult(
            address="a@example.com", outcome="delivered", reply="250 2.0.0 Ok", tls="TLSv1.3"
        ),
        events.RecipientResult(
            address="b@example.com", outcome="deferred", reply="452 4.2.2 Full", tls="TLSv1.3"
        ),
    ]
    worker._measure(results, seconds=0.2)
    assert scraped("empath_delivery_messages_retrying_total", **labels) == retrying + 1
    assert scraped("empath_delivery_messages_delivered_total", status_class="2xx") == delivered + 1
    assert scraped("empath_delivery_attempts_total", outcome="deferred") == attempts + 1


async def test_the_queue_is_reported_by_state_with_the_age_of_its_oldest_waiting_message() -> None:
    now = datetime.now(UTC)
    entries = [
        samples.entry(
            id="A" * 26, state=queue.State.DEFERRED, received_at=now - timedelta(hours=2)
        ),
        samples.entry(id="B" * 26, state=queue.State.QUEUED, received_at=now),
        samples.entry(
            id="C" * 26, state=queue.State.DELIVERED, received_at=now - timedelta(days=3)
        ),
    ]
    stop = asyncio.Event()
    metrics.observe_queue(lambda: entries, until=stop)
    try:
        assert scraped("empath_delivery_queue_size", state="deferred") == 1
        assert scraped("empath_delivery_queue_size", state="delivered") == 1
        assert scraped("empath_delivery_queue_size", state="failed") == 0
        assert 7200 <= scraped("empath_delivery_queue_oldest_seconds") < 7300
    finally:
        stop.set()
    assert scraped("empath_delivery_queue_size", state="deferred") == 0


class RacedKV:
    """A KV bucket in which another replica writes first once."""

    def __init__(self, entry: queue.Entry) -> None:
        self.value = entry.model_dump_json().encode()
        self.revision = 1

    async def get(self, key: str) -> object:
        return type("Found", (), {"value": self.value, "revision": self.revision})()

    async def update(self, key: str, value: bytes, last: int) -> int:
        if self.revision == 1:
            self.revision = 2
            raise nats.js.errors.KeyWrongLastSequenceError()
        self.value = value
        return self.revision + 1


async def test_a_queue_update_that_lost_the_race_is_counted_as_a_kv_conflict() -> None:
    before = scraped("empath_kv_cas_conflicts_total")
    kv = RacedKV(samples.entry())
    changed = await records.Records(kv).update(  # type: ignore[arg-type]
        samples.MESSAGE_ID, lambda e: e.model_copy(update={"held": True})
    )
    assert changed is not None
    assert changed[1].held
    assert scraped("empath_kv_cas_conflicts_total") == before + 1
