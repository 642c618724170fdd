"""Relay policy: who may send mail through this server, and for which domains."""

from __future__ import annotations

import ipaddress

import pytest

from empath.ingress import policies


def policy(
    domains: tuple[str, ...] = ("example.com", ".example.net"),
    trusted: tuple[str, ...] = ("10.0.0.0/8", "2001:db8::/32"),
    **options: str | None,
) -> policies.RelayPolicy:
    return policies.RelayPolicy.of(
        domains, [ipaddress.ip_network(n) for n in trusted], hostname="MX.Test.", **options
    )


@pytest.mark.parametrize(
    ("domain", "relayed"),
    [
        ("example.com", True),
        ("EXAMPLE.COM", True),
        ("example.com.", True),
        ("mail.example.com", False),  # `example.com` names itself only
        ("example.net", False),  # `.example.net` names its subdomains only
        ("mail.example.net", True),
        ("a.b.example.net", True),
        ("MAIL.EXAMPLE.NET.", True),
        ("badexample.net", False),
        ("example.com.evil.test", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_relay_domains_match_themselves_or_with_a_leading_dot_their_subdomains(
    domain: str, relayed: bool
) -> None:
    assert policy().is_relay_domain(domain) is relayed


def test_relay_domains_are_compared_without_case_or_trailing_dot() -> None:
    assert policy(domains=("Example.COM.",)).is_relay_domain("example.com")


def test_anyone_may_send_to_a_relay_domain() -> None:
    assert policy().allows("example.com", ip="198.51.100.7", authenticated=False)


def test_a_stranger_may_not_relay_elsewhere() -> None:
    assert not policy().allows("example.org", ip="198.51.100.7", authenticated=False)
    assert not policy().allows("example.org", ip=None, authenticated=False)


def test_an_authenticated_client_may_relay_anywhere_from_anywhere() -> None:
    assert policy().allows("example.org", ip="198.51.100.7", authenticated=True)
    assert policy(domains=(), trusted=()).allows("example.org", ip=None, authenticated=True)


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("2001:db8::25", True),
        ("2001:db9::25", False),
        ("::ffff:10.1.2.3", True),  # IPv4 on a dual-stack socket
        ("::ffff:11.0.0.1", False),
        ("2001:db8::1%eth0", True),  # a scoped address
        ("", False),
        (None, False),
        ("not-an-ip", False),
        ("10.1.2.3:25", False),
    ],
)
def test_a_client_in_a_trusted_network_may_relay_anywhere(ip: str | None, trusted: bool) -> None:
    assert policy().is_trusted(ip) is trusted
    assert policy().allows("example.org", ip=ip, authenticated=False) is trusted


def test_with_no_relay_domains_and_no_trusted_networks_nothing_relays() -> None:
    closed = policy(domains=(), trusted=())

    for domain in ("example.com", "localhost", "mx.test"):
        assert not closed.allows(domain, ip="127.0.0.1", authenticated=False)


@pytest.mark.parametrize(
    ("path", "postmaster"),
    [
        ("postmaster", True),
        ("PostMaster", True),
        ("postmaster@mx.test", True),
        ("POSTMASTER@MX.TEST.", True),
        ("postmaster@example.com", False),  # someone else's postmaster: an ordinary address
        ("postmistress@mx.test", False),
        ("webmaster", False),
        ('"postmaster"@mx.test', False),
    ],
)
def test_postmaster_alone_or_at_this_servers_name_is_the_postmaster(
    path: str, postmaster: bool
) -> None:
    assert policy(postmaster="root@example.com").is_postmaster(path) is postmaster


def test_the_postmaster_mailbox_is_what_the_settings_name() -> None:
    assert policy(postmaster="root@example.com").postmaster == "root@example.com"
    assert policy().postmaster is None
