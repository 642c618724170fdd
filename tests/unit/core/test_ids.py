"""Queue ids sort by time; a DSN's id is the same however often its cause is redelivered."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from empath.core import ids


def test_a_derived_id_is_the_same_for_the_same_seed_and_time() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    first = ids.derived_id("01ARZ3NDEKTSV4RRFFQ69G5FAV/failure/attempt-3", when)
    assert first == ids.derived_id("01ARZ3NDEKTSV4RRFFQ69G5FAV/failure/attempt-3", when)
    assert first != ids.derived_id("01ARZ3NDEKTSV4RRFFQ69G5FAV/failure/attempt-4", when)
    assert ids.is_valid(first)


def test_derived_and_random_ids_sort_by_time() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    later = when + timedelta(milliseconds=1)
    made = [
        ids.new_id(int(when.timestamp() * 1e9)),
        ids.derived_id("zzz", later),
        ids.new_id(int((later + timedelta(seconds=1)).timestamp() * 1e9)),
    ]
    assert sorted(made, key=lambda i: i[:10]) == made
    assert all(ids.is_valid(i) for i in made)


def test_the_instance_key_names_this_process_in_a_kv_key_token() -> None:
    assert ids.INSTANCE.endswith(f":{os.getpid()}")
    assert all(c.isalnum() or c in "-_" for c in ids.INSTANCE_KEY), ids.INSTANCE_KEY
    assert ids.INSTANCE_KEY.endswith(f"-{os.getpid()}")


def test_an_id_spells_its_time_and_entropy_as_the_ulid_spec_does() -> None:
    # The spec's example: decodeTime("01ARYZ6S41...") is 1469918176385 (2016-07-30).
    assert ids.new_id(1_469_918_176_385 * 1_000_000)[:10] == "01ARYZ6S41"
    assert ids._ulid(0, 0) == "0" * 26
    assert ids._ulid((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25
    # Each character is five bits, most significant first.
    assert ids._ulid(0, 1) == "0" * 25 + "1"
    assert ids._ulid(0, 33 << 70) == "0" * 10 + "11" + "0" * 14
