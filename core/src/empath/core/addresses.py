"""Mail addresses, domains and network targets, read the same way by every service.

A domain is compared in one form everywhere: lower case (Unicode lower case for an
internationalised domain, as SMTPUTF8 carries it) and without the trailing dot of a fully
qualified name. Without that, `U@EXAMPLE.COM.` would be a different destination in the queue
statistics than in delivery. The parsers of `host:port` values live here too, so a setting and
the service that uses it read it alike.
"""

from __future__ import annotations

import ipaddress


def normal_domain(domain: str) -> str:
    """A domain as Empath compares it: lower case, no trailing dot."""
    return domain.strip().lower().rstrip(".")


def domain_of(address: str) -> str:
    """The domain of an address (after its last `@`), in the form of `normal_domain`."""
    return normal_domain(address.rpartition("@")[2])


def parse_hostport(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port), with a clear error."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port_text)


def parse_target(value: str, *, default_port: int = 25) -> tuple[str, int]:
    """An MX override: `host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value.strip("[]"))), default_port
    except ValueError:
        pass
    if ":" in value:
        return parse_hostport(value)
    if not value or " " in value or "/" in value:
        raise ValueError(f"expected host[:port], got {value!r}")
    return value, default_port


def parse_nameserver(value: str) -> tuple[str, int]:
    """A DNS server: `ip` or `ip:port` (`[v6]:port`)."""
    host, port = parse_target(value, default_port=53)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(f"expected ip[:port], got {value!r}") from None
