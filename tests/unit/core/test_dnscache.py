"""The DNS-cache record that delivery writes and control reads: keys, expiry, failures."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from empath.core import dnscache


@pytest.mark.parametrize("name", ["example.com", "Example.COM", "example.com.", " EXAMPLE.com. "])
def test_a_domain_has_one_key_however_it_is_spelt(name: str) -> None:
    assert dnscache.key(name) == "mx.example.com"


def test_host_addresses_have_their_own_keys() -> None:
    assert dnscache.key("MX1.Example.com.", kind="a") == "a.mx1.example.com"
    assert dnscache.parse_key("a.mx1.example.com") == ("a", "mx1.example.com")
    assert dnscache.parse_key(dnscache.key("example.com")) == ("mx", "example.com")


def test_a_record_counts_until_it_expires() -> None:
    record = dnscache.Record.answer([(10, "mx.example.com")], ttl=60, now=1000.0)
    raw = record.model_dump_json().encode()
    assert dnscache.read(raw, now=1059.5) == record
    assert record.ttl(now=1030.0) == 30.0
    assert dnscache.read(raw, now=1060.0) is None
    assert record.expired(now=1060.0)


def test_an_mx_answer_keeps_its_pairs_and_addresses_stay_strings() -> None:
    mx = dnscache.Record.answer([(10, "mx1.test"), (20, "mx2.test")], ttl=60, now=0)
    assert json.loads(mx.model_dump_json())["value"] == [[10, "mx1.test"], [20, "mx2.test"]]
    read = dnscache.read(mx.model_dump_json().encode(), now=1)
    assert read is not None
    assert read.value == [(10, "mx1.test"), (20, "mx2.test")]
    addresses = dnscache.Record.answer(["192.0.2.1", "2001:db8::1"], ttl=60, now=0)
    read = dnscache.read(addresses.model_dump_json().encode(), now=1)
    assert read is not None
    assert read.value == ["192.0.2.1", "2001:db8::1"]


def test_a_failure_is_a_typed_error_not_an_answer() -> None:
    record = dnscache.Record.failure("550 5.1.2 Domain gone.test does not exist", ttl=60, now=0)
    assert json.loads(record.model_dump_json()) == {
        "value": None,
        "error": "550 5.1.2 Domain gone.test does not exist",
        "expires": 60.0,
    }
    read = dnscache.read(record.model_dump_json().encode(), now=1)
    assert read is not None
    assert (read.value, read.error) == (None, "550 5.1.2 Domain gone.test does not exist")


@pytest.mark.parametrize(
    "fields",
    [{"expires": 1.0}, {"value": ["192.0.2.1"], "error": "550 no", "expires": 1.0}],
)
def test_a_record_holds_an_answer_or_an_error_never_both_nor_neither(
    fields: dict[str, object],
) -> None:
    with pytest.raises(ValidationError):
        dnscache.Record.model_validate(fields)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"value": {"error": "550 5.1.2 old marker"}, "expires": 9999999999}',
        b'{"value": [[10, "mx.test"]]}',
    ],
)
def test_an_unreadable_record_is_a_miss(raw: bytes) -> None:
    assert dnscache.read(raw, now=0) is None
