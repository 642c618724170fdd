"""DNS management: the cache every delivery worker shares, and MX overrides set at run time.

The cache lives in the KV bucket `empath_dns` (records and keys as `dnscache` spells them);
clearing or refreshing it also tells every worker (`empath.dns.invalidate`) to drop its own
copy. Overrides set here go into the KV bucket `empath_overrides`, which workers consult
before DNS and before the overrides of their settings.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Literal

import nats.errors
import nats.js.errors
from aiohttp import web
from pydantic import Field

from empath.control import calls
from empath.core import addresses, bus, dnscache, names

MAX_DOMAIN = 253  # RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written out
MAX_LABEL = 63
# Letters, digits and hyphens (RFC 1123 §2.1), underscores for service names such as _mta-sts.
LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")


class CacheItem(calls.Model):
    type: str = Field(description="MX or A/AAAA.")
    name: str
    answer: dnscache.MxAnswer | dnscache.AddressAnswer | None = Field(
        description="MX: [preference, host] pairs; A/AAAA: addresses; null for a failure."
    )
    error: str | None = Field(description="The reply recipients get, for a cached failure.")
    ttl: int = Field(description="Seconds until it expires.")


class CacheAnswer(calls.Model):
    items: list[CacheItem]


class ClearedAnswer(calls.Model):
    cleared: int


class RefreshedAnswer(calls.Model):
    refreshed: str


class Override(calls.Model):
    domain: str
    target: str
    source: Literal["runtime"]


class OverridesAnswer(calls.Model):
    items: list[Override]


class OverrideBody(calls.Parameters):
    target: str = Field(description="host[:port] to send the domain's mail to.")


class OverrideSetAnswer(calls.Model):
    domain: str
    target: str


class RemovedAnswer(calls.Model):
    removed: str


def domain_problem(domain: str) -> str | None:
    """Why `domain` (normalised) is no domain name, or None. Checked before it names a KV key
    or a subject: NATS closes the connection of a client whose subject is over its limits."""
    if not domain:
        return "the domain is empty"
    if len(domain) > MAX_DOMAIN:
        return f"a domain has at most {MAX_DOMAIN} characters, this one {len(domain)}"
    for label in domain.split("."):
        if len(label) > MAX_LABEL:
            return f"a label of a domain has at most {MAX_LABEL} characters"
        if not LABEL.match(label):
            return (
                "a domain is labels of letters, digits and hyphens (not first or last) joined "
                "by dots; an international one in its xn-- form"
            )
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _domain(request: web.Request) -> str:
    domain = dnscache.normalise(request.match_info["domain"])
    problem = domain_problem(domain)
    if problem is not None:
        shown = domain if len(domain) <= 80 else domain[:80] + "..."
        raise calls.Problem(400, f"not a domain: {shown!r}: {problem}")
    return domain


async def list_cache(request: web.Request) -> web.Response:
    now = time.time()
    items = []
    for key, value in await bus.kv_items(request.app[calls.LINK].dns):
        record = dnscache.read(value, now=now)
        if record is None:
            continue
        kind, name = dnscache.parse_key(key)
        items.append(
            CacheItem(
                type=dnscache.KINDS.get(kind, kind),
                name=name,
                answer=record.value,
                error=record.error,
                ttl=round(record.ttl(now)),
            )
        )
    return calls.reply(CacheAnswer(items=items))


async def clear_cache(request: web.Request) -> web.Response:
    kv = request.app[calls.LINK].dns
    entries = await bus.kv_items(kv)
    for key, _ in entries:
        await kv.purge(key)
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, b"*")
    return calls.reply(ClearedAnswer(cleared=len(entries)))


async def refresh(request: web.Request) -> web.Response:
    domain = _domain(request)
    try:
        await request.app[calls.LINK].dns.purge(dnscache.key(domain))
    except (nats.errors.Error, nats.js.errors.Error) as error:
        raise calls.Problem(503, str(error)) from None
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return calls.reply(RefreshedAnswer(refreshed=domain))


async def list_overrides(request: web.Request) -> web.Response:
    items = [
        Override(domain=key, target=value.decode(), source="runtime")
        for key, value in await bus.kv_items(request.app[calls.LINK].overrides)
    ]
    return calls.reply(OverridesAnswer(items=items))


async def set_override(request: web.Request) -> web.Response:
    domain = _domain(request)
    body = await calls.json_body(request)
    target = body.get("target")
    if not isinstance(target, str):
        raise calls.Problem(400, 'give the target as {"target": "host[:port]"}')
    try:
        host, port = addresses.parse_target(target)
    except ValueError as error:
        raise calls.Problem(400, str(error)[:200]) from None
    if not _is_address(host):
        problem = domain_problem(dnscache.normalise(host))
        if problem is not None:
            raise calls.Problem(400, f"the target is no host name: {problem}")
    value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    await request.app[calls.LINK].overrides.put(domain, value.encode())
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return calls.reply(OverrideSetAnswer(domain=domain, target=value))


async def remove_override(request: web.Request) -> web.Response:
    domain = _domain(request)
    kv = request.app[calls.LINK].overrides
    try:
        await kv.get(domain)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        raise calls.Problem(404, f"no override for {domain}") from None
    await kv.purge(domain)
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return calls.reply(RemovedAnswer(removed=domain))


ROUTES = (
    calls.Route(
        "GET",
        "/api/v1/dns/cache",
        handler=list_cache,
        summary="The DNS cache shared by the delivery workers",
        answer=CacheAnswer,
        refusals=(),
    ),
    calls.Route(
        "DELETE",
        "/api/v1/dns/cache",
        handler=clear_cache,
        summary="Clear it",
        answer=ClearedAnswer,
        refusals=(),
    ),
    calls.Route(
        "POST",
        "/api/v1/dns/refresh/{domain}",
        handler=refresh,
        summary="Forget the cached answer for a domain",
        answer=RefreshedAnswer,
    ),
    calls.Route(
        "GET",
        "/api/v1/dns/overrides",
        handler=list_overrides,
        summary="MX overrides set at run time",
        answer=OverridesAnswer,
        refusals=(),
    ),
    calls.Route(
        "PUT",
        "/api/v1/dns/overrides/{domain}",
        handler=set_override,
        summary="Send a domain's mail to host[:port] instead of its MX",
        answer=OverrideSetAnswer,
        body=OverrideBody,
        refusals=(400,),
    ),
    calls.Route(
        "DELETE",
        "/api/v1/dns/overrides/{domain}",
        handler=remove_override,
        summary="Remove a run-time override",
        answer=RemovedAnswer,
        refusals=(400, 404),
    ),
)
