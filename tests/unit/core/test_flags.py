"""The frozen flag is read before every job and every scheduler tick: while NATS restarts the
read fails, and that must be the temporary failure callers handle (a job put back, a tick
skipped), not an unforeseen error logged with its traceback (found by the chaos suite)."""

from __future__ import annotations

import types
from typing import Any

import nats.errors
import nats.js.errors
import pytest

from empath.core import errors, flags


class Flags:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def get(self, key: str) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_flag_that_cannot_be_read_while_nats_restarts_is_a_temporary_bus_failure() -> None:
    for failure in (nats.errors.TimeoutError(), nats.errors.ConnectionClosedError(), OSError()):
        with pytest.raises(errors.BusUnavailable) as raised:
            await flags.is_frozen(Flags(failure))  # type: ignore[arg-type]
        assert raised.value.temporary


async def test_the_queue_is_frozen_only_when_the_flag_says_so() -> None:
    assert not await flags.is_frozen(Flags(nats.js.errors.KeyNotFoundError()))  # type: ignore[arg-type]
    assert await flags.is_frozen(Flags(types.SimpleNamespace(value=b"1")))  # type: ignore[arg-type]
    assert not await flags.is_frozen(Flags(types.SimpleNamespace(value=b"0")))  # type: ignore[arg-type]
