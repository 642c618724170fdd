"""The frozen flag as the spool's intake reads it: once per interval, again when told."""

from __future__ import annotations

import types

import nats.js.errors

from empath.core import flags, names


class Bucket:
    """The flags bucket, counting reads."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.reads = 0

    async def get(self, key: str) -> types.SimpleNamespace:
        assert key == names.FROZEN_FLAG
        self.reads += 1
        if self.value is None:
            raise nats.js.errors.KeyNotFoundError
        return types.SimpleNamespace(value=self.value)


async def test_the_flag_is_read_once_per_interval_and_again_once_forgotten() -> None:
    bucket = Bucket()
    frozen = flags.Cached(bucket, seconds=60)  # type: ignore[arg-type]

    assert [await frozen() for _ in range(5)] == [False] * 5
    assert bucket.reads == 1

    bucket.value = b"1"  # frozen by this spool's own API call, which then forgets
    assert not await frozen()
    frozen.forget()
    assert await frozen()
    assert bucket.reads == 2


async def test_with_no_interval_every_call_reads() -> None:
    bucket = Bucket()
    frozen = flags.Cached(bucket, seconds=0)  # type: ignore[arg-type]
    bucket.value = b"1"
    assert await frozen()
    bucket.value = b"0"
    assert not await frozen()
    assert bucket.reads == 2
