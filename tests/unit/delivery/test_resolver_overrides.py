"""Runtime MX overrides: read once per domain for a while, not for every job; a change that
control announces (`forget`) is read at the next job."""

from __future__ import annotations

import types

import nats.js.errors

from empath.core import settings as config
from empath.delivery import resolver


class Overrides:
    """The `empath_overrides` bucket, counting reads."""

    def __init__(self, **targets: str) -> None:
        self.targets = targets
        self.reads = 0

    async def get(self, key: str) -> types.SimpleNamespace:
        self.reads += 1
        if key not in self.targets:
            raise nats.js.errors.KeyNotFoundError
        return types.SimpleNamespace(value=self.targets[key].encode())


def routes_over(bucket: Overrides) -> resolver.Resolver:
    settings = config.load(environment=False, hostname="mx.test")
    return resolver.Resolver(settings, runtime_overrides=bucket)  # type: ignore[arg-type]


async def test_an_override_is_read_once_for_many_jobs_and_again_once_forgotten() -> None:
    bucket = Overrides(**{"example.com": "192.0.2.7:2525"})
    routes = routes_over(bucket)

    for _ in range(5):
        assert await routes.route("Example.COM") == [resolver.Hop("192.0.2.7", "192.0.2.7", 2525)]
    assert bucket.reads == 1

    bucket.targets["example.com"] = "192.0.2.8:25"
    routes.forget("example.com")  # control changed it and said so
    assert await routes.route("example.com") == [resolver.Hop("192.0.2.8", "192.0.2.8", 25)]
    assert bucket.reads == 2


async def test_no_override_is_remembered_too_until_everything_is_forgotten() -> None:
    bucket = Overrides()
    routes = routes_over(bucket)
    routes.overrides = {"example.com": ("192.0.2.9", 25)}  # from settings: under any runtime one

    for _ in range(3):
        assert await routes.route("example.com") == [resolver.Hop("192.0.2.9", "192.0.2.9", 25)]
    assert bucket.reads == 1

    bucket.targets["example.com"] = "192.0.2.10:25"
    routes.forget("*")
    assert await routes.route("example.com") == [resolver.Hop("192.0.2.10", "192.0.2.10", 25)]
