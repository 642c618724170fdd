"""The DNS cache on its own: bounded, expiring with the TTL, counting hits and misses."""

from __future__ import annotations

import time

from empath.delivery.resolver import Cache


def test_the_cache_honours_ttl_and_size_and_counts() -> None:
    cache = Cache(size=2)
    cache.put("mx.a.test", [(10, "mx.a.test")], ttl=60)
    cache.put("mx.b.test", [(10, "mx.b.test")], ttl=0.05)
    assert cache.get("mx.a.test") == [(10, "mx.a.test")]
    time.sleep(0.1)
    assert cache.get("mx.b.test") is None  # expired with its TTL
    cache.put("mx.c.test", [(5, "mx.c.test")], ttl=60)
    cache.put("mx.d.test", [(5, "mx.d.test")], ttl=60)
    assert len(cache) == 2  # bounded: the least recently used went
    assert cache.get("mx.a.test") is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
