"""Ingress leaves small bodies out of the bucket only while every spool reads them from
their events (`bodies.SpoolsReady`), as the spools' heartbeats say."""

from __future__ import annotations

import json

import pytest

from empath.core import bodies

NEW = json.dumps({"service": "spool", "instance": "a", **bodies.spool_heartbeat()}).encode()
OLD = json.dumps({"service": "spool", "instance": "b", "started": 0}).encode()


class Beats:
    """The spools' heartbeats as `bus.kv_items` reads them, and a clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.beats: list[tuple[str, bytes]] = []

        async def kv_items(kv: object, keys: str) -> list[tuple[str, bytes]]:
            assert keys == "spool.>"
            return self.beats

        monkeypatch.setattr(bodies.bus, "kv_items", kv_items)

    def spools(self, *values: bytes) -> None:
        self.beats = [(f"spool.{n}", value) for n, value in enumerate(values)]


@pytest.fixture
def beats(monkeypatch: pytest.MonkeyPatch) -> Beats:
    return Beats(monkeypatch)


async def test_a_new_installation_is_ready_at_its_first_look(beats: Beats) -> None:
    ready = bodies.SpoolsReady(None, clock=lambda: beats.now)  # type: ignore[arg-type]
    beats.spools(NEW, NEW)
    assert await ready.look()


@pytest.mark.parametrize(
    "values",
    [(), (OLD,), (NEW, OLD), (NEW, b"not json"), (NEW, b'{"features": "body-in-event"}')],
)
async def test_no_spool_or_one_that_does_not_read_events_means_every_body_is_stored(
    beats: Beats, values: tuple[bytes, ...]
) -> None:
    ready = bodies.SpoolsReady(None, clock=lambda: beats.now)  # type: ignore[arg-type]
    beats.spools(*values)
    assert not await ready.look()


async def test_after_an_older_spool_is_gone_bodies_are_stored_a_while_longer(
    beats: Beats,
) -> None:
    """An older spool cut off from NATS loses its heartbeat entry, and beats again when it is
    back: ingress waits a heartbeat's lifetime and a beat before it trusts its absence."""
    ready = bodies.SpoolsReady(None, settle=40.0, clock=lambda: beats.now)  # type: ignore[arg-type]
    beats.spools(NEW)
    assert await ready.look()
    beats.spools(NEW, OLD)
    assert not await ready.look()
    beats.spools(NEW)  # its entry expired, or it stopped
    beats.now += 39.0
    assert not await ready.look()
    beats.now += 2.0
    assert await ready.look()
