"""DNS management: the cache every delivery worker shares, and MX overrides set at run time.

The cache lives in the KV bucket `empath_dns` (records and keys as `dnscache` spells them);
clearing or refreshing it also tells every worker (`empath.dns.invalidate`) to drop its own
copy. Overrides set here go into the KV bucket `empath_overrides`, which workers consult
before DNS and before the overrides of their settings.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Annotated, Literal

import nats.js.errors
import pydantic
from aiohttp import web
from pydantic import Field

from empath.control import calls
from empath.core import addresses, bus, dnscache, names


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
    target: Annotated[
        str, Field(strict=True), calls.on_wrong_type('give the target as {"target": "host[:port]"}')
    ] = Field(description="host[:port] to send the domain's mail to.")


class OverrideSetAnswer(calls.Model):
    domain: str
    target: str


class RemovedAnswer(calls.Model):
    removed: str


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


DOMAIN = pydantic.TypeAdapter(addresses.Domain)


def path_domain(request: web.Request) -> str:
    """The path's `{domain}` as a domain that may name a KV key and a subject, or 400 with the
    rule it breaks: NATS closes the connection of a client whose subject is over its limits,
    and KV keys are ASCII, so an international domain is given in its xn-- form here. (Not
    `addresses.domain_of`, which takes an address apart.)"""
    text = request.match_info["domain"]
    try:
        domain = DOMAIN.validate_python(text)
    except pydantic.ValidationError as error:
        raise calls.Problem(400, error.errors()[0]["msg"]) from None
    if not domain.isascii():
        raise calls.Problem(
            400, f"not a domain: {domain[:80]!r}: an international one is given in its xn-- form"
        )
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
    domain = path_domain(request)
    await request.app[calls.LINK].dns.purge(dnscache.key(domain))  # NATS down: 503 (calls)
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return calls.reply(RefreshedAnswer(refreshed=domain))


async def list_overrides(request: web.Request) -> web.Response:
    items = [
        Override(domain=key, target=value.decode(), source="runtime")
        for key, value in await bus.kv_items(request.app[calls.LINK].overrides)
    ]
    return calls.reply(OverridesAnswer(items=items))


async def set_override(request: web.Request) -> web.Response:
    domain = path_domain(request)
    body = await calls.body_of(request, OverrideBody)
    try:
        host, port = addresses.parse_target(body.target)
    except ValueError as error:
        raise calls.Problem(400, str(error)[:200]) from None
    if not _is_address(host):
        problem = addresses.domain_problem(addresses.normal_domain(host))
        if problem is None and not host.isascii():
            problem = "an international one is given in its xn-- form"
        if problem is not None:
            raise calls.Problem(400, f"the target is no host name: {problem}")
    value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    await request.app[calls.LINK].overrides.put(domain, value.encode())
    await request.app[calls.LINK].bus.nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return calls.reply(OverrideSetAnswer(domain=domain, target=value))


async def remove_override(request: web.Request) -> web.Response:
    domain = path_domain(request)
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
