"""Relay policy: whose mail for which domains this server takes.

Mail for a relay domain is taken from anyone. Mail for any other domain only from a trusted
network or an authenticated client. Nothing else relays, whatever the settings leave out: with
no relay domains and no trusted networks, every RCPT is refused.

`postmaster` (RFC 5321 §4.5.1: every SMTP server takes mail for it, without a domain too) is
an alias: `<postmaster>` and `postmaster@<hostname>` go to the address `EMPATH_POSTMASTER`
names, from anyone.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from empath.core import addresses
from empath.core.settings import Network


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    domains: frozenset[str]
    trusted: tuple[Network, ...]
    hostname: str = ""
    postmaster: str | None = None

    @classmethod
    def of(
        cls,
        domains: Iterable[str],
        trusted: Iterable[Network],
        *,
        hostname: str = "",
        postmaster: str | None = None,
    ) -> RelayPolicy:
        return cls(
            frozenset(addresses.normal_domain(d) for d in domains),
            tuple(trusted),
            addresses.normal_domain(hostname),
            postmaster,
        )

    def is_postmaster(self, path: str) -> bool:
        """`postmaster` (any case), alone or at this server's own name."""
        local, at, domain = path.rpartition("@") if "@" in path else (path, "", "")
        if local.lower() != "postmaster":
            return False
        return not at or addresses.normal_domain(domain) == self.hostname

    def is_relay_domain(self, domain: str) -> bool:
        """`example.com` matches itself only; `.example.com` matches its subdomains."""
        domain = addresses.normal_domain(domain)
        if domain in self.domains:
            return True
        parts = domain.split(".")
        return any("." + ".".join(parts[i:]) in self.domains for i in range(1, len(parts)))

    def is_trusted(self, ip: str | None) -> bool:
        return _trusted(ip, self.trusted) if ip else False

    def allows(self, domain: str, *, ip: str | None, authenticated: bool) -> bool:
        return authenticated or self.is_trusted(ip) or self.is_relay_domain(domain)


@functools.lru_cache(maxsize=4096)
def _trusted(ip: str, trusted: tuple[Network, ...]) -> bool:
    """Whether `ip` is in one of the `trusted` networks. Asked at every RCPT and for every
    message (3 us each, parsing the address), mostly about the few clients a server hears
    from: remembered, for a bounded number of them."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)
