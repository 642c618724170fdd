"""Every service reads a domain, and a `host:port` value, the same way."""

from __future__ import annotations

import pytest

from empath.core import addresses


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("u@example.com", "example.com"),
        ("U@EXAMPLE.COM.", "example.com"),
        ('"a@b"@Example.Org', "example.org"),
        ("user@BÜCHER.example", "bücher.example"),
        ("user@[192.0.2.1]", "[192.0.2.1]"),
        ("postmaster", "postmaster"),
    ],
)
def test_the_domain_of_an_address_is_lower_case_without_a_trailing_dot(
    address: str, domain: str
) -> None:
    assert addresses.domain_of(address) == domain


def test_a_fully_qualified_domain_and_its_plain_spelling_are_one_domain() -> None:
    assert addresses.normal_domain(" Example.COM. ") == addresses.normal_domain("example.com")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.com", ("mx.example.com", 25)),
        ("mx.example.com:2525", ("mx.example.com", 2525)),
        ("192.0.2.1", ("192.0.2.1", 25)),
        ("2001:db8::1", ("2001:db8::1", 25)),
        ("[2001:db8::1]:587", ("2001:db8::1", 587)),
    ],
)
def test_an_mx_override_names_a_host_and_a_port(value: str, expected: tuple[str, int]) -> None:
    assert addresses.parse_target(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        *("", "two words", "host/path", "host:0", "host:99999"),
        *("smtp example.org:25", "a/b:25", "h:25:26", "]", ":25", "[h]:25", "h:٢٥"),
    ],
)
def test_a_malformed_mx_override_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="expected host"):
        addresses.parse_target(value)


def test_a_listen_address_without_a_host_listens_on_the_default_host() -> None:
    assert addresses.parse_hostport(":2525") == ("127.0.0.1", 2525)
    assert addresses.parse_hostport(":8080", default_host="0.0.0.0") == ("0.0.0.0", 8080)


def test_a_nameserver_must_be_an_ip_address() -> None:
    assert addresses.parse_nameserver("192.0.2.53") == ("192.0.2.53", 53)
    assert addresses.parse_nameserver("[::1]:5353") == ("::1", 5353)
    with pytest.raises(ValueError, match=r"expected ip\[:port\]"):
        addresses.parse_nameserver("dns.example")
