"""The list settings as an operator writes them in the environment: comma lists, networks,
`domain=value` pairs and `host[:port]` targets, and the error that names a wrong one."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from empath.core import addresses, errors, settings


def load(**values: Any) -> settings.Settings:
    return settings.load(environment=False, hostname="mx.test", **values)


def refusal(**values: Any) -> str:
    with pytest.raises(errors.ConfigurationError) as error:
        load(**values)
    return str(error.value)


def test_relay_domains_are_a_comma_list_in_lower_case_without_trailing_dots() -> None:
    loaded = load(relay_domains=" Example.COM., .Example.NET ,, b.example,")

    assert loaded.relay_domains == ["example.com", ".example.net", "b.example"]


def test_a_yaml_list_means_the_same_as_a_comma_list() -> None:
    assert load(relay_domains=["Example.COM.", ".example.net"]).relay_domains == (
        load(relay_domains="Example.COM.,.example.net").relay_domains
    )


@pytest.mark.parametrize("value", ["example .com", "postmaster@example.com", "a.example, ."])
def test_a_relay_domain_that_is_no_domain_is_refused_by_name(value: str) -> None:
    assert "EMPATH_RELAY_DOMAINS: " in refusal(relay_domains=value)


def test_trusted_networks_are_a_comma_list_of_networks_and_addresses() -> None:
    loaded = load(trusted_networks="10.0.0.0/8, 2001:db8::/32,192.0.2.7")

    assert loaded.trusted_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    ]


def test_an_empty_list_of_trusted_networks_trusts_nobody() -> None:
    assert load(trusted_networks="").trusted_networks == []


def test_by_default_only_the_loopback_addresses_are_trusted() -> None:
    assert load().trusted_networks == [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "10.0.0.0/8, 0.0.0.0/0"])
def test_trusting_the_whole_internet_is_refused_as_an_open_relay(network: str) -> None:
    problem = refusal(trusted_networks=network)

    assert "EMPATH_TRUSTED_NETWORKS: " in problem
    assert "open relay" in problem


@pytest.mark.parametrize(
    "network", ["0.0.0.0/1,128.0.0.0/1", "::/1, 8000::/1", "10.0.0.0/8, 0.0.0.0/2, 64.0.0.0/6"]
)
def test_trusted_networks_that_together_trust_too_much_are_refused_as_an_open_relay(
    network: str,
) -> None:
    problem = refusal(trusted_networks=network)

    assert "EMPATH_TRUSTED_NETWORKS: " in problem
    assert "open relay" in problem
    assert "EMPATH_TRUSTED_NETWORKS_MAX_SHARE" in problem


def test_the_share_trusted_networks_may_cover_is_a_setting() -> None:
    loaded = load(trusted_networks="0.0.0.0/2", trusted_networks_max_share=0.3)

    assert loaded.trusted_networks == [ipaddress.ip_network("0.0.0.0/2")]
    assert "EMPATH_TRUSTED_NETWORKS: " in refusal(
        trusted_networks="0.0.0.0/2", trusted_networks_max_share=0.2
    )


@pytest.mark.parametrize(
    "target",
    ["smtp example.org:25", "smtp.example.org:25:26", "a/b:25", ":25", "]", "[smtp.example.org]"],
)
def test_an_mx_override_to_no_host_is_refused_at_start(target: str) -> None:
    assert "EMPATH_MX_OVERRIDES: " in refusal(mx_overrides=f"example.com={target}")


@pytest.mark.parametrize("network", ["10.0.0.1/8", "10.0.0.0/33", "intranet", "10.0.0.0/8;"])
def test_a_malformed_network_is_refused_by_name(network: str) -> None:
    assert "EMPATH_TRUSTED_NETWORKS: " in refusal(trusted_networks=network)


def test_mx_overrides_are_domain_equals_target_pairs() -> None:
    loaded = load(
        mx_overrides=(
            "example.com=[2001:db8::25]:2525, Example.NET.=smtp.example.org,"
            "example.org=192.0.2.25:26, example.info=2001:db8::26"
        )
    )

    assert loaded.mx_overrides == {
        "example.com": "[2001:db8::25]:2525",
        "example.net": "smtp.example.org",
        "example.org": "192.0.2.25:26",
        "example.info": "2001:db8::26",
    }
    assert [addresses.parse_target(t) for t in loaded.mx_overrides.values()] == [
        ("2001:db8::25", 2525),
        ("smtp.example.org", 25),
        ("192.0.2.25", 26),
        ("2001:db8::26", 25),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "example.com",
        "example.com=",
        "=smtp.example.org",
        "example.com=smtp.example.org:0",
        "example.com=smtp.example.org:65536",
        "example.com=smtp.example.org:smtp",
        "example.com=smtp example.org",
        "example.com=smtp.example.org/25",
    ],
)
def test_a_malformed_mx_override_is_refused_by_name(value: str) -> None:
    assert "EMPATH_MX_OVERRIDES: " in refusal(mx_overrides=value)


def test_tls_policies_are_pairs_of_a_domain_and_a_known_policy() -> None:
    loaded = load(tls_policies="Example.COM=required, example.net=none")

    assert loaded.tls_policies == {"example.com": "required", "example.net": "none"}
    assert "EMPATH_TLS_POLICIES" in refusal(tls_policies="example.com=sometimes")


def test_dns_nameservers_are_addresses_with_optional_ports() -> None:
    loaded = load(dns_nameservers="192.0.2.53, [2001:db8::53]:5353")

    assert [addresses.parse_nameserver(s) for s in loaded.dns_nameservers] == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 5353),
    ]
    assert "EMPATH_DNS_NAMESERVERS: " in refusal(dns_nameservers="ns.example.com")


def test_the_retry_schedule_is_a_comma_list_of_seconds() -> None:
    assert load(retry_schedule="0, 30,120.5").retry_schedule == [0.0, 30.0, 120.5]


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("smtp.example.org", ("smtp.example.org", 25)),
        ("smtp.example.org:2525", ("smtp.example.org", 2525)),
        (" smtp.example.org ", ("smtp.example.org", 25)),
        ("192.0.2.25", ("192.0.2.25", 25)),
        ("192.0.2.25:2525", ("192.0.2.25", 2525)),
        ("2001:db8::25", ("2001:db8::25", 25)),
        ("[2001:db8::25]", ("2001:db8::25", 25)),
        ("[2001:db8::25]:2525", ("2001:db8::25", 2525)),
    ],
)
def test_an_mx_target_is_a_host_or_address_with_an_optional_port(
    target: str, parsed: tuple[str, int]
) -> None:
    assert addresses.parse_target(target) == parsed


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:8025", ("::1", 8025)),
        (":8025", ("127.0.0.1", 8025)),
        ("0.0.0.0:25", ("0.0.0.0", 25)),
    ],
)
def test_a_listen_address_is_host_colon_port(value: str, parsed: tuple[str, int]) -> None:
    assert addresses.parse_hostport(value) == parsed


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:", "host:0", "host:65536", "h:x"])
def test_a_listen_address_without_a_good_port_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        addresses.parse_hostport(value)
    assert "EMPATH_SMTP_LISTEN: expected host:port" in refusal(smtp_listen=value)
