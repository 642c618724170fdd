"""The HTTP JSON API: queue, DNS and system management.

Queue calls are answered by the spool over NATS request/reply (`empath.api.queue.*`); this
service adds HTTP, the bearer token, the audit log and the OpenAPI document. Every call but
`/healthz` and `/readyz` needs `Authorization: Bearer <token>`. A bad call gets 400 and a reason
and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import nats.errors
import nats.js.errors
from aiohttp import web
from nats.js.kv import KeyValue

from empath.control import audit, openapi
from empath.core import bus as bus_module
from empath.core import errors, ids, names, store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = {"/healthz", "/readyz"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

BUS: web.AppKey[bus_module.Bus] = web.AppKey("bus", bus_module.Bus)
OBJECTS: web.AppKey[store.ObjectStore] = web.AppKey("objects", store.ObjectStore)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
AUDIT: web.AppKey[audit.AuditLog] = web.AppKey("audit", audit.AuditLog)
STARTED: web.AppKey[float] = web.AppKey("started", float)
DNS: web.AppKey[KeyValue] = web.AppKey("dns", KeyValue)
OVERRIDES: web.AppKey[KeyValue] = web.AppKey("overrides", KeyValue)
SERVICES: web.AppKey[KeyValue] = web.AppKey("services", KeyValue)


def problem(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    token = request.app[TOKEN]
    # Through the Kubernetes API service proxy the API server keeps `Authorization` for
    # itself, so the token may come as `X-Empath-Token` instead.
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    given = request.headers.get("X-Empath-Token", given)
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        refused = problem(401, "a valid bearer token is required")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="empath"'
        return refused
    if request.method not in MUTATING:
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
        request.app[AUDIT].record(
            who=audit.fingerprint(token),
            user=request.headers.get("X-Remote-User") or request.headers.get("Impersonate-User"),
            remote=request.remote,
            agent=request.headers.get("User-Agent"),
            method=request.method,
            path=request.path_qs,
            status=status,
        )


async def ask(request: web.Request, subject: str, body: dict[str, Any]) -> web.Response:
    """Forward a queue call to the spool; its reply becomes the HTTP response."""
    nc = request.app[BUS].nc
    try:
        reply = await nc.request(subject, json.dumps(body).encode(), timeout=10)
    except nats.errors.NoRespondersError:
        return problem(503, "no spool is running")
    except (nats.errors.Error, OSError) as error:
        return problem(503, f"the spool did not answer: {error!r}")
    answer = json.loads(reply.data)
    if "error" in answer:
        return problem(int(answer.get("code", 500)), answer["error"])
    return web.json_response(answer)


def message_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not ids.is_valid(value):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"not a queue id: {value!r}"}),
            content_type="application/json",
        )
    return value


def number(request: web.Request, name: str, *, integer: bool = False) -> float | int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be a number, got {raw!r}"}),
            content_type="application/json",
        ) from None
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {error}"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


# -- queue -------------------------------------------------------------------------------


async def queue_list(request: web.Request) -> web.Response:
    query: dict[str, Any] = {}
    for name in ("state", "domain", "sender", "after", "sort"):
        if name in request.query:
            query[name] = request.query[name]
    limit = number(request, "limit", integer=True)
    if limit is not None:
        query["limit"] = limit
    min_age = number(request, "min_age")
    if min_age is not None:
        query["min_age"] = min_age
    return await ask(request, names.QUERY_LIST_SUBJECT, query)


async def with_message(request: web.Request, *, body: bool) -> web.Response:
    """A message's record with its header section, and its whole text when `body`."""
    response = await ask(request, names.QUERY_GET_SUBJECT, {"id": message_id(request)})
    if response.status != 200:
        return response
    answer = json.loads(response.body)  # type: ignore[arg-type]
    try:
        raw = await request.app[OBJECTS].get(answer["item"]["body_key"])
    except errors.NotFound:
        return problem(404, "the body is no longer in the bucket")
    except errors.EmpathError as error:
        return problem(503, str(error))
    answer["headers"] = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    if body:
        answer["body"] = raw.decode("utf-8", "replace")
    return web.json_response(answer)


async def queue_view(request: web.Request) -> web.Response:
    if request.query.get("body") not in {"1", "true", "yes"}:
        return await ask(request, names.QUERY_GET_SUBJECT, {"id": message_id(request)})
    return await with_message(request, body=True)


async def queue_headers(request: web.Request) -> web.Response:
    return await with_message(request, body=False)


async def queue_stats(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_STATS_SUBJECT, {})


async def queue_retry(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_RETRY_SUBJECT, {"id": message_id(request)})


async def queue_retry_domain(request: web.Request) -> web.Response:
    body = await json_body(request)
    domain = body.get("domain") or request.query.get("domain")
    if not isinstance(domain, str) or not domain:
        return problem(400, "give the domain whose deferred mail to retry")
    return await ask(request, names.QUERY_RETRY_SUBJECT, {"domain": domain})


async def queue_delete(request: web.Request) -> web.Response:
    body = await json_body(request)
    recipients = body.get("recipients", request.query.getall("recipient", None))
    query: dict[str, Any] = {"id": message_id(request)}
    if recipients:
        query["recipients"] = recipients
    return await ask(request, names.QUERY_DELETE_SUBJECT, query)


async def queue_hold(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_HOLD_SUBJECT, {"id": message_id(request)})


async def queue_release(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_RELEASE_SUBJECT, {"id": message_id(request)})


async def queue_freeze(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_FREEZE_SUBJECT, {})


async def queue_unfreeze(request: web.Request) -> web.Response:
    return await ask(request, names.QUERY_UNFREEZE_SUBJECT, {})


# -- system ------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[BUS].nc.is_connected:
        return problem(503, "not connected to NATS")
    return web.json_response({"ok": True})


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"pong": True, "version": version("empath-control")})


async def status(request: web.Request) -> web.Response:
    app = request.app
    nats_ok = app[BUS].nc.is_connected
    try:
        await app[OBJECTS].ensure_bucket()
        store_ok, store_error = True, None
    except errors.EmpathError as error:
        store_ok, store_error = False, str(error)
    instances = await bus_module.live_services(app[SERVICES])
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance["service"]] = counts.get(instance["service"], 0) + 1
    depth: Any = None
    stats = await ask(request, names.QUERY_STATS_SUBJECT, {})
    if stats.status == 200:
        answer = json.loads(stats.body)  # type: ignore[arg-type]
        depth = {
            "waiting": answer["waiting"],
            "by_state": answer["by_state"],
            "frozen": answer["frozen"],
        }
    return web.json_response(
        {
            "version": version("empath-control"),
            "uptime_seconds": round(time.monotonic() - app[STARTED], 1),
            "nats": {"ok": nats_ok},
            "object_store": {"ok": store_ok, "error": store_error},
            "services": counts,
            "instances": instances,
            "delivery_workers": counts.get("delivery", 0),
            "queue": depth,
        }
    )


async def spec(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT)


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
    app = web.Application(middlewares=[authenticate])
    app[BUS], app[OBJECTS], app[TOKEN], app[AUDIT] = bus, objects, token, audit_log
    app[SERVICES], app[DNS], app[OVERRIDES] = services, dns_cache, overrides
    app[STARTED] = time.monotonic()
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get(openapi.PATH, spec),
            web.get("/api/v1/system/ping", ping),
            web.get("/api/v1/system/status", status),
            web.get("/api/v1/queue", queue_list),
            web.get("/api/v1/queue/stats", queue_stats),
            web.post("/api/v1/queue/retry", queue_retry_domain),
            web.post("/api/v1/queue/freeze", queue_freeze),
            web.post("/api/v1/queue/unfreeze", queue_unfreeze),
            web.get("/api/v1/queue/{id}", queue_view),
            web.get("/api/v1/queue/{id}/headers", queue_headers),
            web.delete("/api/v1/queue/{id}", queue_delete),
            web.post("/api/v1/queue/{id}/retry", queue_retry),
            web.post("/api/v1/queue/{id}/hold", queue_hold),
            web.post("/api/v1/queue/{id}/release", queue_release),
        ]
    )
    from empath.control import dns  # the DNS routes use this module's keys

    app.add_routes(dns.ROUTES)
    return app
