"""Properties of the list settings: whatever an operator can write in the documented formats
reads back as meant, and nothing else gets past them but as a named configuration error."""

from __future__ import annotations

import contextlib
import ipaddress
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from empath.core import addresses, errors
from empath.core import settings as config

SOME = settings(max_examples=150)

LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
HOSTNAMES = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
PORTS = st.integers(1, 65535)
SPACE = st.sampled_from(["", " ", "  ", "\t"])


def load(**values: Any) -> config.Settings:
    return config.load(environment=False, hostname="mx.test", **values)


def refusal(**values: Any) -> str:
    try:
        load(**values)
    except errors.ConfigurationError as error:
        return str(error)
    raise AssertionError(f"accepted: {values}")


def networks(
    shortest: int = 1,
) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    v4 = st.builds(
        lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
        st.ip_addresses(v=4),
        st.integers(shortest, 32),
    )
    v6 = st.builds(
        lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
        st.ip_addresses(v=6),
        st.integers(shortest, 128),
    )
    return v4 | v6


@st.composite
def comma_list(draw: st.DrawFn, items: list[str]) -> str:
    """The items as an operator may write them: commas, spaces around, stray empty items."""
    parts = [draw(SPACE) + item + draw(SPACE) for item in items]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(SPACE))
    return ",".join(parts)


@SOME
@given(st.data(), st.lists(HOSTNAMES, max_size=5))
def test_relay_domains_read_back_from_a_comma_list_in_any_case(
    data: st.DataObject, names: list[str]
) -> None:
    written = [data.draw(st.sampled_from([n, n.upper(), n + "."])) for n in names]

    loaded = load(relay_domains=data.draw(comma_list(written)))

    assert loaded.relay_domains == names
    assert load(relay_domains=written).relay_domains == names


@SOME
@given(st.data(), st.lists(networks(shortest=10), max_size=5))  # together under 1% of a space
def test_trusted_networks_read_back_from_a_comma_list(
    data: st.DataObject, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    loaded = load(trusted_networks=data.draw(comma_list([str(n) for n in trusted])))

    assert loaded.trusted_networks == trusted


@SOME
@given(HOSTNAMES, PORTS)
def test_a_host_with_or_without_a_port_is_an_mx_target(host: str, port: int) -> None:
    assert addresses.parse_target(host) == (host, 25)
    assert addresses.parse_target(f"{host}:{port}") == (host, port)


@SOME
@given(st.ip_addresses(v=6), PORTS)
def test_an_ipv6_target_is_written_in_brackets_with_a_port_or_bare_without(
    address: ipaddress.IPv6Address, port: int
) -> None:
    assert addresses.parse_target(f"[{address}]:{port}") == (str(address), port)
    assert addresses.parse_target(f"[{address}]") == (str(address), 25)
    assert addresses.parse_target(str(address)) == (str(address), 25)
    assert addresses.parse_target(address.exploded) == (str(address), 25)


@SOME
@given(st.ip_addresses(v=4), PORTS)
def test_an_ipv4_target_reads_back(address: ipaddress.IPv4Address, port: int) -> None:
    assert addresses.parse_target(f"{address}:{port}") == (str(address), port)
    assert addresses.parse_target(str(address)) == (str(address), 25)


@SOME
@given(
    st.data(),
    st.dictionaries(
        HOSTNAMES,
        HOSTNAMES
        | st.ip_addresses().map(str)
        | st.tuples(HOSTNAMES, PORTS).map("{0[0]}:{0[1]}".format),
        max_size=4,
    ),
)
def test_mx_overrides_read_back_from_domain_equals_target_pairs(
    data: st.DataObject, overrides: dict[str, str]
) -> None:
    pairs = [f"{data.draw(st.sampled_from([d, d.upper()]))}={t}" for d, t in overrides.items()]

    assert load(mx_overrides=data.draw(comma_list(pairs))).mx_overrides == overrides


@SOME
@given(st.lists(networks(), max_size=6))
def test_trusted_networks_that_together_cover_over_the_share_are_refused_as_an_open_relay(
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    shares = [
        sum(n.num_addresses for n in ipaddress.collapse_addresses(
            [n for n in trusted if n.version == version]
        )) / 2**bits
        for version, bits in ((4, 32), (6, 128))
    ]  # fmt: skip
    written = ",".join(str(n) for n in trusted)

    if max(shares) > 0.01:
        problem = refusal(trusted_networks=written)
        assert "EMPATH_TRUSTED_NETWORKS: " in problem
        assert "open relay" in problem
    else:
        assert load(trusted_networks=written).trusted_networks == trusted


TARGET_JUNK = st.text(st.sampled_from("[]:.0129afAF x/-\t"), max_size=20) | st.text(max_size=20)


@settings(max_examples=500)
@given(TARGET_JUNK)
def test_a_target_either_parses_to_a_port_that_exists_or_is_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        host, port = addresses.parse_target(text)
        assert isinstance(host, str)
        assert 0 < port < 65536


@settings(max_examples=500)
@given(TARGET_JUNK)
def test_a_target_that_parses_names_a_host_or_an_address(text: str) -> None:
    with contextlib.suppress(ValueError):
        host, _ = addresses.parse_target(text)
        assert host
        assert not any(c.isspace() or c in "/[]" for c in host)
        if ":" in host:  # only an IPv6 address has colons
            ipaddress.IPv6Address(host)


@settings(max_examples=300)
@given(st.text(st.sampled_from("ab.=,: /[]1@\t"), max_size=30) | st.text(max_size=30))
def test_a_list_setting_either_loads_or_is_refused_by_name(text: str) -> None:
    refused = []
    for name in ("relay_domains", "trusted_networks", "mx_overrides", "dns_nameservers"):
        try:
            load(**{name: text})
        except errors.ConfigurationError as error:
            refused.append((name, str(error)))
    assert all(f"EMPATH_{name.upper()}: " in problem for name, problem in refused)
