"""Where mail for a domain goes: MX lookup (RFC 5321 §5.1) with a TTL-honouring cache.

MX hosts in preference order, shuffled among equal preferences; no MX means the domain itself
(implicit MX); a null MX (RFC 7505) and NXDOMAIN are permanent failures; SERVFAIL and timeouts
are temporary. Overrides (`EMPATH_MX_OVERRIDES`) send a domain to a fixed host, which is also
how a smart host is set. Answers are cached in this worker (bounded, by TTL) and in the KV
bucket `empath_dns` that every delivery worker shares.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from empath.core import addresses, dnscache, errors, metrics, telemetry
from empath.core.settings import Settings

log = logging.getLogger("empath.delivery.resolver")

# How long a worker trusts a runtime MX override it read (or its absence), and for how many
# domains at most.
OVERRIDE_SECONDS = 10.0
OVERRIDE_DOMAINS = 10_000

NEGATIVE_TTL = 60.0


class DeliveryError(errors.EmpathError):
    """A failure with the SMTP-style reply that recipients get for it; raised as one of the
    two below, whose type says whether the recipients are deferred or failed. The base itself
    cannot be made: it would say neither, and be taken as failed."""

    def __init__(self, reply: str) -> None:
        if type(self) is DeliveryError:
            raise TypeError("raise DeliveryDeferred or DeliveryFailed, not DeliveryError")
        super().__init__(reply)
        self.reply = reply


class DeliveryDeferred(DeliveryError, errors.TemporaryError):
    """The recipients are deferred: try again later (a 4xx reply)."""


class DeliveryFailed(DeliveryError, errors.PermanentError):
    """The recipients failed for good and are bounced (a 5xx reply)."""


@dataclass(frozen=True, slots=True)
class Hop:
    """One place to try: the MX host's name (for TLS) and an address to connect to."""

    name: str
    address: str
    port: int


class Cache:
    """A bounded LRU of DNS records, each kept until it expires (by its own `expires`).

    `now` is the clock the records' expiry is read against (Unix time; a test's own clock).
    Hits, misses and evictions are counted only as metrics (`empath.dns.cache.*`).
    """

    def __init__(self, size: int, *, now: Callable[[], float] = time.time) -> None:
        self.size = size
        self._now = now
        self._records: collections.OrderedDict[str, dnscache.Record] = collections.OrderedDict()

    def get(self, key: str) -> dnscache.Record | None:
        record = self._records.get(key)
        if record is None or record.expired(self._now()):
            self._records.pop(key, None)
            metrics.dns_cache_misses.add(1)
            return None
        self._records.move_to_end(key)
        metrics.dns_cache_hits.add(1)
        return record

    def put(self, key: str, record: dnscache.Record) -> None:
        if self.size <= 0:
            return
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self.size:
            self._records.popitem(last=False)
            metrics.dns_cache_evictions.add(1)

    def clear(self) -> None:
        self._records.clear()

    def drop(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


class Resolver:
    def __init__(
        self,
        settings: Settings,
        shared: KeyValue | None = None,
        runtime_overrides: KeyValue | None = None,
    ) -> None:
        self.overrides = {d: addresses.parse_target(t) for d, t in settings.mx_overrides.items()}
        self.runtime_overrides = runtime_overrides
        self.port = settings.delivery_port
        resolver = dns.asyncresolver.Resolver(configure=not settings.dns_nameservers)
        if settings.dns_nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*addresses.parse_nameserver(server))
                for server in settings.dns_nameservers
            ]
        resolver.lifetime = settings.dns_timeout
        resolver.timeout = min(settings.dns_timeout, 2.0)
        self._resolver = resolver
        self.cache = Cache(settings.dns_cache_size)
        self.shared = shared
        # Runtime overrides as last read, per domain, until when (monotonic). Control tells
        # every worker when one changes (`forget`); the time bounds a missed message.
        self._overrides: dict[str, tuple[float, tuple[str, int] | None]] = {}

    async def route(self, domain: str) -> list[Hop]:
        """The hops to try for a domain, in order."""
        domain = addresses.normal_domain(domain)
        override = await self._runtime_override(domain) or self.overrides.get(domain)
        if override is not None:
            host, port = override
            return [Hop(host, address, port) for address in await self.addresses(host)]
        if domain.startswith("[") and domain.endswith("]"):  # an address literal
            literal = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
            return [Hop(literal, literal, self.port)]
        hops = []
        last: DeliveryError | None = None
        for host in await self.mx(domain):
            try:
                hops += [Hop(host, address, self.port) for address in await self.addresses(host)]
            except DeliveryError as error:
                last = error  # one MX host without addresses: try the others
        if not hops:
            raise last or DeliveryDeferred(f"451 4.4.4 No address for any MX host of {domain}")
        return hops

    async def _runtime_override(self, domain: str) -> tuple[str, int] | None:
        """An override an operator set at run time (KV `empath_overrides`) wins over settings.

        Read once per domain every `OVERRIDE_SECONDS`, not for every job: control announces
        each change on `empath.dns.invalidate`, which drops what was read (`forget`)."""
        if self.runtime_overrides is None:
            return None
        now = time.monotonic()
        known = self._overrides.get(domain)
        if known is not None and known[0] > now:
            return known[1]
        if len(self._overrides) >= OVERRIDE_DOMAINS:
            self._overrides.clear()  # bounded: a worker serving many domains reads again
        try:
            entry = await self.runtime_overrides.get(domain)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            self._overrides[domain] = (now + OVERRIDE_SECONDS, None)
            return None
        except (nats.errors.Error, nats.js.errors.Error):
            return None
        if not entry.value:
            self._overrides[domain] = (now + OVERRIDE_SECONDS, None)
            return None
        try:
            target = addresses.parse_target(entry.value.decode())
        except ValueError as error:  # UnicodeDecodeError too
            log.warning("the MX override for %s is no target: %s", domain, error)
            raise DeliveryDeferred(
                f"451 4.3.5 The MX override for {domain} is not a host[:port]"
            ) from error
        self._overrides[domain] = (now + OVERRIDE_SECONDS, target)
        return target

    def forget(self, domain: str) -> None:
        """Drop what this worker cached about a domain ("*": everything)."""
        if domain == "*":
            self.cache.clear()
            self._overrides.clear()
        else:
            self.cache.drop(dnscache.key(domain))
            self._overrides.pop(addresses.normal_domain(domain), None)

    async def mx(self, domain: str) -> list[str]:
        """MX hosts by preference (equal preferences in random order)."""
        answer = await self._cached(dnscache.key(domain), lambda: self._mx(domain))
        groups: dict[int, list[str]] = collections.defaultdict(list)
        for preference, host in cast(dnscache.MxAnswer, answer):  # an `mx.` key holds MX pairs
            groups[preference].append(host)
        ordered = []
        for preference in sorted(groups):
            hosts = groups[preference]
            random.shuffle(hosts)
            ordered += hosts
        return ordered

    async def addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        answer = await self._cached(dnscache.key(host, kind="a"), lambda: self._a(host))
        return list(cast(dnscache.AddressAnswer, answer))  # an `a.` key holds addresses

    async def _cached(
        self, key: str, lookup: Callable[[], Awaitable[dnscache.Record]]
    ) -> dnscache.MxAnswer | dnscache.AddressAnswer:
        """The answer for `key`: from this worker, else from the shared cache, else looked up
        (and then kept in both)."""
        record = self.cache.get(key)
        if record is None and self.shared is not None:
            record = await self._shared_get(key)
        if record is None:
            record = await lookup()
            self.cache.put(key, record)
            await self._shared_put(key, record)
        if record.error is not None:
            raise DeliveryFailed(record.error)
        assert record.value is not None  # a record holds a value or an error
        return record.value

    async def _shared_get(self, key: str) -> dnscache.Record | None:
        assert self.shared is not None
        try:
            entry = await self.shared.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, nats.js.errors.Error):
            return None  # the shared cache is an optimisation: carry on without it
        record = dnscache.read(entry.value)
        if record is not None:
            self.cache.put(key, record)
        return record

    async def _shared_put(self, key: str, record: dnscache.Record) -> None:
        if self.shared is None:
            return
        try:
            await self.shared.put(key, record.model_dump_json().encode())
        except (nats.errors.Error, nats.js.errors.Error) as error:
            log.debug("cannot share %s: %r", key, error)

    @telemetry.traced("dns.query")
    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        kind = {"type": rdtype}
        metrics.dns_lookups.add(1, kind)
        started = time.monotonic()
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise
        except dns.resolver.NoAnswer:
            raise
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            metrics.dns_errors.add(1, {**kind, "error": error.__class__.__name__})
            raise DeliveryDeferred(
                f"451 4.4.3 DNS lookup of {rdtype} for {name} failed: {error.__class__.__name__}"
            ) from error
        finally:
            metrics.dns_lookup_duration.record(time.monotonic() - started, kind)

    async def _mx(self, domain: str) -> dnscache.Record:
        try:
            answer = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            error = f"550 5.1.2 Domain {domain} does not exist"
            return dnscache.Record.failure(error, ttl=NEGATIVE_TTL)
        except dns.resolver.NoAnswer:
            # implicit MX (RFC 5321 §5.1)
            return dnscache.Record.answer([(0, domain)], ttl=NEGATIVE_TTL)
        records = [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]
        if len(records) == 1 and records[0][1] == "":
            error = f"556 5.1.10 Domain {domain} accepts no mail (null MX)"
            ttl = float(answer.rrset.ttl if answer.rrset else NEGATIVE_TTL)
            return dnscache.Record.failure(error, ttl=ttl)
        records = [r for r in records if r[1]]
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else NEGATIVE_TTL
        return dnscache.Record.answer(records, ttl=ttl)

    async def _a(self, host: str) -> dnscache.Record:
        addresses: list[str] = []
        ttls = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._query(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            addresses += [r.to_text() for r in answer]
            if answer.rrset is not None:
                ttls.append(float(answer.rrset.ttl))
        ttl = min(ttls, default=NEGATIVE_TTL)
        if not addresses:
            raise DeliveryDeferred(f"451 4.4.4 No address for host {host}")
        return dnscache.Record.answer(addresses, ttl=ttl)
