"""DNS management: the cache every delivery worker shares, and MX overrides set at run time.

The cache lives in the KV bucket `empath_dns`; clearing or refreshing it also tells every
worker (`empath.dns.invalidate`) to drop its own copy. Overrides set here go into the KV
bucket `empath_overrides`, which workers consult before DNS and before the overrides of their
settings.
"""

from __future__ import annotations

import json
import time

import nats.errors
import nats.js.errors
from aiohttp import web

from empath.control import api
from empath.core import bus, names
from empath.core.settings import parse_target


def _domain(request: web.Request) -> str:
    domain = request.match_info["domain"].lower().rstrip(".")
    if not domain or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789.-_" for c in domain):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"not a domain: {domain!r}"}), content_type="application/json"
        )
    return domain


async def list_cache(request: web.Request) -> web.Response:
    now = time.time()
    items = []
    for key, value in await bus.kv_items(request.app[api.DNS]):
        record = json.loads(value)
        if record["expires"] <= now:
            continue
        kind, _, name = key.partition(".")
        items.append(
            {
                "type": {"mx": "MX", "a": "A/AAAA"}.get(kind, kind),
                "name": name,
                "answer": record["value"],
                "ttl": round(record["expires"] - now),
            }
        )
    return web.json_response({"items": items})


async def clear_cache(request: web.Request) -> web.Response:
    kv = request.app[api.DNS]
    entries = await bus.kv_items(kv)
    for key, _ in entries:
        await kv.purge(key)
    await request.app[api.BUS].nc.publish(names.DNS_INVALIDATE_SUBJECT, b"*")
    return web.json_response({"cleared": len(entries)})


async def refresh(request: web.Request) -> web.Response:
    domain = _domain(request)
    try:
        await request.app[api.DNS].purge(f"mx.{domain}")
    except (nats.errors.Error, nats.js.errors.Error) as error:
        return api.problem(503, str(error))
    await request.app[api.BUS].nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return web.json_response({"refreshed": domain})


async def list_overrides(request: web.Request) -> web.Response:
    items = [
        {"domain": key, "target": value.decode(), "source": "runtime"}
        for key, value in await bus.kv_items(request.app[api.OVERRIDES])
    ]
    return web.json_response({"items": items})


async def set_override(request: web.Request) -> web.Response:
    domain = _domain(request)
    body = await api.json_body(request)
    target = body.get("target")
    if not isinstance(target, str):
        return api.problem(400, 'give the target as {"target": "host[:port]"}')
    try:
        host, port = parse_target(target)
    except ValueError as error:
        return api.problem(400, str(error))
    value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    await request.app[api.OVERRIDES].put(domain, value.encode())
    await request.app[api.BUS].nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return web.json_response({"domain": domain, "target": value})


async def remove_override(request: web.Request) -> web.Response:
    domain = _domain(request)
    kv = request.app[api.OVERRIDES]
    try:
        await kv.get(domain)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return api.problem(404, f"no override for {domain}")
    await kv.purge(domain)
    await request.app[api.BUS].nc.publish(names.DNS_INVALIDATE_SUBJECT, domain.encode())
    return web.json_response({"removed": domain})


ROUTES = [
    web.get("/api/v1/dns/cache", list_cache),
    web.delete("/api/v1/dns/cache", clear_cache),
    web.post("/api/v1/dns/refresh/{domain}", refresh),
    web.get("/api/v1/dns/overrides", list_overrides),
    web.put("/api/v1/dns/overrides/{domain}", set_override),
    web.delete("/api/v1/dns/overrides/{domain}", remove_override),
]
