"""Relay policy: whose mail for which domains this server takes.

Mail for a relay domain is taken from anyone. Mail for any other domain only from a trusted
network or an authenticated client. Nothing else relays, whatever the settings leave out: with
no relay domains and no trusted networks, every RCPT is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from empath.core.settings import Network


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    domains: frozenset[str]
    trusted: tuple[Network, ...]

    @classmethod
    def of(cls, domains: Iterable[str], trusted: Iterable[Network]) -> RelayPolicy:
        return cls(frozenset(d.lower().rstrip(".") for d in domains), tuple(trusted))

    def is_relay_domain(self, domain: str) -> bool:
        """`example.com` matches itself only; `.example.com` matches its subdomains."""
        domain = domain.lower().rstrip(".")
        if domain in self.domains:
            return True
        parts = domain.split(".")
        return any("." + ".".join(parts[i:]) in self.domains for i in range(1, len(parts)))

    def is_trusted(self, ip: str | None) -> bool:
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)

    def allows(self, domain: str, *, ip: str | None, authenticated: bool) -> bool:
        return authenticated or self.is_trusted(ip) or self.is_relay_domain(domain)
