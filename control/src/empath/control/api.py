"""The HTTP JSON API: queue, DNS, plugin and system management, assembled from each area's routes.

Queue calls are answered by the spool over NATS request/reply (`empath.api.queue.*`); this
service adds HTTP, the bearer tokens, the audit log and the OpenAPI document. Every call but
`/healthz` and `/readyz` needs `Authorization: Bearer <token>`. A bad call gets 400 and a reason
and changes nothing; a body larger than `calls.MAX_BODY` gets 413.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from empath.control import audit, calls, dns, link, openapi, plugins, queue, system
from empath.control import tokens as tokens_module
from empath.core import settings, store

ROUTES: tuple[calls.Route, ...] = (
    *system.ROUTES,
    *queue.ROUTES,
    *dns.ROUTES,
    *plugins.ROUTES,
)
OPEN_PATHS = {route.path for route in ROUTES if route.open}
AUDITED = {(route.method, route.path) for route in ROUTES if route.audited}
DOCUMENT = openapi.document(ROUTES)


@web.middleware
async def authenticate(request: web.Request, handler: calls.Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    # Through the Kubernetes API service proxy the API server keeps `Authorization` for
    # itself, so the token may come as `X-Empath-Token` instead.
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    given = request.headers.get("X-Empath-Token", given)
    name = request.app[calls.TOKENS].name_of(given) if given else None
    if name is None:
        refused = calls.problem(401, "a valid bearer token is required")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="empath"'
        _audit(request, who=None, status=401, token_given=bool(given))
        return refused
    if not _audited(request):
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
        _audit(request, who=f"token:{name}", status=status, fingerprint=audit.fingerprint(given))


def _audited(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return (request.method, path) in AUDITED


def _audit(request: web.Request, *, who: str | None, status: int, **more: Any) -> None:
    request.app[calls.AUDIT].record(
        who=who,
        **more,
        **audit.claim(request.headers),
        remote=request.remote,
        agent=request.headers.get("User-Agent"),
        method=request.method,
        path=request.path_qs,
        status=status,
    )


def application(
    *,
    connection: link.Link,
    objects: store.ObjectStore,
    tokens: tokens_module.Tokens,
    audit_log: audit.AuditLog,
    configured_plugins: Sequence[settings.Plugin] = (),
) -> web.Application:
    # `problems` sits inside `authenticate`, so the audit log records the status of a refusal.
    app = web.Application(
        middlewares=[authenticate, calls.problems], client_max_size=calls.MAX_BODY
    )
    app[calls.LINK], app[calls.OBJECTS], app[calls.TOKENS] = connection, objects, tokens
    app[calls.AUDIT], app[calls.STARTED] = audit_log, time.monotonic()
    app[calls.DOCUMENT] = DOCUMENT
    app[plugins.CONFIGURED] = tuple(configured_plugins)
    app.add_routes([route.definition() for route in ROUTES])
    return app
