"""Per-destination limits: sessions at once and messages per second, per domain."""

from __future__ import annotations

import asyncio
import time

from empath.delivery import throttle


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_domain_gets_at_most_its_number_of_sessions_at_once() -> None:
    limits = throttle.Throttle(connections=2, rate=0)
    inside: list[str] = []
    done = asyncio.Event()

    async def deliver(name: str, domain: str) -> None:
        async with limits.slot(domain):
            inside.append(name)
            await done.wait()

    tasks = [
        asyncio.create_task(deliver(name, domain))
        for name, domain in (
            ("a1", "a.example"),
            ("a2", "a.example"),
            ("a3", "a.example"),
            ("b1", "b.example"),
        )
    ]
    await settle()

    assert sorted(inside) == ["a1", "a2", "b1"]  # a3 waits; b.example has its own slots
    done.set()
    await asyncio.gather(*tasks)
    assert sorted(inside) == ["a1", "a2", "a3", "b1"]


async def test_messages_to_a_domain_are_spaced_at_its_rate() -> None:
    limits = throttle.Throttle(connections=10, rate=20)  # one every 50 ms
    start = time.monotonic()

    for _ in range(4):
        await limits.pace("a.example")

    assert time.monotonic() - start >= 3 * 0.05 * 0.95


async def test_one_domains_pace_does_not_slow_another() -> None:
    limits = throttle.Throttle(connections=10, rate=0.5)  # one every two seconds
    await limits.pace("a.example")
    start = time.monotonic()

    await limits.pace("b.example")

    assert time.monotonic() - start < 1.0


async def test_a_rate_of_zero_means_no_pacing() -> None:
    limits = throttle.Throttle(connections=10, rate=0)
    start = time.monotonic()

    for _ in range(100):
        await limits.pace("a.example")

    assert time.monotonic() - start < 1.0
