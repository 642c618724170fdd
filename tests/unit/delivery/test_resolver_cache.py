"""The DNS cache on its own: bounded, expiring with the TTL, counting hits and misses, and
shared between workers through records in a KV bucket."""

from __future__ import annotations

from types import SimpleNamespace

import nats.js.errors
import pytest
from prometheus_client import parser

from empath.core import dnscache, errors, settings, telemetry
from empath.delivery.resolver import Cache, Resolver


class Clock:
    """Unix time that moves only when the test says so."""

    def __init__(self) -> None:
        self.time = 1_700_000_000.0

    def __call__(self) -> float:
        return self.time


def mx(host: str, *, ttl: float, clock: Clock) -> dnscache.Record:
    return dnscache.Record.answer([(10, host)], ttl=ttl, now=clock())


def hits_and_misses() -> tuple[float, float]:
    """The cache's counters as a scraper reads them from `/metrics`."""
    text = telemetry.prometheus_text()[0].decode()
    found = {
        sample.name: sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }
    return (
        found.get("empath_dns_cache_hits_total", 0.0),
        found.get("empath_dns_cache_misses_total", 0.0),
    )


def test_the_cache_honours_ttl_and_size_and_counts() -> None:
    hits, misses = hits_and_misses()
    clock = Clock()
    cache = Cache(size=2, now=clock)
    a, b = mx("mx.a.test", ttl=60, clock=clock), mx("mx.b.test", ttl=5, clock=clock)
    cache.put("mx.a.test", a)
    cache.put("mx.b.test", b)
    assert cache.get("mx.b.test") == b
    clock.time += 10
    assert cache.get("mx.a.test") == a
    assert cache.get("mx.b.test") is None  # expired with its TTL
    cache.put("mx.c.test", mx("mx.c.test", ttl=60, clock=clock))
    cache.put("mx.d.test", mx("mx.d.test", ttl=60, clock=clock))
    assert len(cache) == 2  # bounded: the least recently used went
    assert cache.get("mx.a.test") is None
    assert hits_and_misses() == (hits + 2, misses + 2)


def test_a_record_is_kept_until_the_second_it_expires() -> None:
    clock = Clock()
    cache = Cache(size=10, now=clock)
    cache.put("a.mx.a.test", dnscache.Record.answer(["192.0.2.1"], ttl=30, now=clock()))
    clock.time += 29.5
    assert cache.get("a.mx.a.test") is not None
    clock.time += 0.5
    assert cache.get("a.mx.a.test") is None
    assert len(cache) == 0  # an expired record does not stay


class FakeKV:
    """The shared cache's bucket, in memory: get and put are all the resolver uses."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get(self, key: str) -> SimpleNamespace:
        if key not in self.values:
            raise nats.js.errors.KeyNotFoundError
        return SimpleNamespace(value=self.values[key])

    async def put(self, key: str, value: bytes) -> int:
        self.values[key] = value
        return 1


def resolver_with(shared: FakeKV) -> Resolver:
    return Resolver(
        settings.load(environment=False, dns_nameservers=["127.0.0.1:1"], dns_timeout=0.2),
        shared,  # type: ignore[arg-type]
    )


async def test_a_failure_another_worker_cached_is_the_recipients_reply_without_a_lookup() -> None:
    shared = FakeKV()
    reply = "550 5.1.2 Domain gone.test does not exist"
    shared.values["mx.gone.test"] = (
        dnscache.Record.failure(reply, ttl=60).model_dump_json().encode()
    )
    with pytest.raises(errors.EmpathError) as failed:
        await resolver_with(shared).route("Gone.Test.")  # no nameserver answers on port 1
    assert str(failed.value) == reply


async def test_an_answer_another_worker_cached_is_used_and_kept() -> None:
    shared = FakeKV()
    shared.values["mx.dest.test"] = (
        dnscache.Record.answer([(10, "mx.dest.test")], ttl=60).model_dump_json().encode()
    )
    shared.values["a.mx.dest.test"] = (
        dnscache.Record.answer(["192.0.2.7"], ttl=60).model_dump_json().encode()
    )
    resolver = resolver_with(shared)
    hops = await resolver.route("dest.test")
    assert [(hop.name, hop.address) for hop in hops] == [("mx.dest.test", "192.0.2.7")]
    assert len(resolver.cache) == 2  # kept in this worker too


async def test_a_domain_is_looked_up_in_its_normal_form() -> None:
    shared = FakeKV()
    shared.values["mx.dest.test"] = (
        dnscache.Record.answer([(10, "mx.dest.test")], ttl=60).model_dump_json().encode()
    )
    shared.values["a.mx.dest.test"] = (
        dnscache.Record.answer(["192.0.2.7"], ttl=60).model_dump_json().encode()
    )
    hops = await resolver_with(shared).route(" Dest.TEST. ")  # no nameserver answers on port 1
    assert [(hop.name, hop.address) for hop in hops] == [("mx.dest.test", "192.0.2.7")]
