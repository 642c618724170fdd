"""The HTTP JSON API: queue, DNS and system management, assembled from each area's routes.

Queue calls are answered by the spool over NATS request/reply (`empath.api.queue.*`); this
service adds HTTP, the bearer token, the audit log and the OpenAPI document. Every call but
`/healthz` and `/readyz` needs `Authorization: Bearer <token>`. A bad call gets 400 and a reason
and changes nothing.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web
from nats.js.kv import KeyValue

from empath.control import audit, calls, dns, openapi, queue, system
from empath.core import bus as bus_module
from empath.core import store

ROUTES: tuple[calls.Route, ...] = (*system.ROUTES, *queue.ROUTES, *dns.ROUTES)
OPEN_PATHS = {route.path for route in ROUTES if route.open}
DOCUMENT = openapi.document(ROUTES)


@web.middleware
async def authenticate(request: web.Request, handler: calls.Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    token = request.app[calls.TOKEN]
    # Through the Kubernetes API service proxy the API server keeps `Authorization` for
    # itself, so the token may come as `X-Empath-Token` instead.
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    given = request.headers.get("X-Empath-Token", given)
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        refused = calls.problem(401, "a valid bearer token is required")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="empath"'
        return refused
    if request.method not in calls.MUTATING:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        request.app[calls.AUDIT].record(
            who=audit.fingerprint(token),
            user=request.headers.get("X-Remote-User") or request.headers.get("Impersonate-User"),
            remote=request.remote,
            agent=request.headers.get("User-Agent"),
            method=request.method,
            path=request.path_qs,
            status=status,
        )


def application(
    *,
    bus: bus_module.Bus,
    objects: store.ObjectStore,
    token: str,
    audit_log: audit.AuditLog,
    services: KeyValue,
    dns_cache: KeyValue,
    overrides: KeyValue,
) -> web.Application:
    # `problems` sits inside `authenticate`, so the audit log records the status of a refusal.
    app = web.Application(middlewares=[authenticate, calls.problems])
    app[calls.BUS], app[calls.OBJECTS], app[calls.TOKEN] = bus, objects, token
    app[calls.AUDIT], app[calls.SERVICES], app[calls.DNS] = audit_log, services, dns_cache
    app[calls.OVERRIDES], app[calls.STARTED] = overrides, time.monotonic()
    app[calls.DOCUMENT] = DOCUMENT
    app.add_routes([route.definition() for route in ROUTES])
    return app
