"""System calls: liveness and readiness, ping, the status of every part, the API document."""

from __future__ import annotations

import time
from datetime import datetime
from importlib.metadata import version
from typing import Any

import nats.errors
import nats.js.errors
from aiohttp import web
from pydantic import ConfigDict, Field

from empath.control import calls, link, openapi
from empath.core import bus as bus_module
from empath.core import errors, queries


class HealthAnswer(calls.Model):
    ok: bool


class PingAnswer(calls.Model):
    pong: bool
    version: str


class NatsPart(calls.Model):
    ok: bool


class StorePart(calls.Model):
    ok: bool
    error: str | None


class Instance(calls.Model):
    """One running service instance, as its heartbeat in `empath_services` tells."""

    # Read from heartbeats, which a newer service may extend: keep what is known.
    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str
    instance: str = Field(description="host:pid")
    started: datetime = Field(description="When it started (ISO 8601, UTC).")


class Depth(calls.Model):
    waiting: int
    by_state: dict[str, int]
    frozen: bool
    oldest_seconds: float | None = Field(
        default=None, description="Age of the oldest waiting message; null: none waits."
    )


# The window of the key figures `system status` shows (rates, outcomes, failure ratios).
ACTIVITY_MINUTES = 15


class StatusAnswer(calls.Model):
    version: str
    uptime_seconds: float
    nats: NatsPart
    object_store: StorePart
    services: dict[str, int] = Field(description="Running instances per service.")
    instances: list[Instance]
    delivery_workers: int
    queue: Depth | None = Field(description="null when the spool does not answer.")
    activity: queries.Activity | None = Field(
        default=None,
        description=f"The last {ACTIVITY_MINUTES} minutes: received and delivered rates, "
        "recipients by outcome, the failure ratio by domain (null when the spool does not say).",
    )


async def live(connection: link.Link) -> list[dict[str, Any]]:
    """The heartbeats in the services bucket; none while NATS is lost."""
    if connection.problem() is not None:
        return []
    try:
        return await bus_module.live_services(connection.services)
    except (nats.errors.Error, nats.js.errors.Error, OSError):
        return []


def _version() -> str:
    return version("empath-control")


async def healthz(request: web.Request) -> web.Response:
    """Fails while NATS is lost: the service cannot do anything then (it reconnects)."""
    down = request.app[calls.LINK].problem()
    if down is not None:
        raise calls.Problem(503, down)
    return calls.reply(HealthAnswer(ok=True))


async def readyz(request: web.Request) -> web.Response:
    return await healthz(request)


async def ping(request: web.Request) -> web.Response:
    return calls.reply(PingAnswer(pong=True, version=_version()))


async def status(request: web.Request) -> web.Response:
    app = request.app
    try:
        await app[calls.OBJECTS].ensure_bucket()
        store = StorePart(ok=True, error=None)
    except errors.EmpathError as error:
        store = StorePart(ok=False, error=str(error))
    instances = [Instance.model_validate(found) for found in await live(app[calls.LINK])]
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance.service] = counts.get(instance.service, 0) + 1
    depth: Depth | None = None
    stats = await _stats(request)
    if stats is not None:
        depth = Depth(
            waiting=stats.waiting,
            by_state=stats.by_state,
            frozen=stats.frozen,
            oldest_seconds=None if stats.oldest is None else round(stats.oldest.age_seconds, 1),
        )
    return calls.reply(
        StatusAnswer(
            version=_version(),
            uptime_seconds=round(time.monotonic() - app[calls.STARTED], 1),
            nats=NatsPart(ok=app[calls.LINK].problem() is None),
            object_store=store,
            services=counts,
            instances=instances,
            delivery_workers=counts.get("delivery", 0),
            queue=depth,
            activity=None if stats is None else stats.activity,
        )
    )


async def _stats(request: web.Request) -> queries.StatsAnswer | None:
    """The queue's figures with its recent activity; without it from a spool too old to know
    the question (a rolling upgrade); None when no spool answers (the status says so)."""
    for asked in (queries.StatsRequest(activity_minutes=ACTIVITY_MINUTES), queries.StatsRequest()):
        try:
            return await calls.ask(request, queries.STATS, asked)
        except calls.Problem as problem:
            if problem.status != 400:
                return None
    return None


ROUTES = (
    calls.Route(
        "GET",
        "/healthz",
        handler=healthz,
        summary="Health: 503 while NATS is lost (the service reconnects)",
        answer=HealthAnswer,
        refusals=(503,),
        open=True,
    ),
    calls.Route(
        "GET",
        "/readyz",
        handler=readyz,
        summary="Readiness (connected to NATS)",
        answer=HealthAnswer,
        refusals=(503,),
        open=True,
    ),
    calls.Route(
        "GET",
        openapi.PATH,
        handler=openapi.serve,
        summary="This document",
        answer=openapi.DocumentAnswer,
        refusals=(),
    ),
    calls.Route(
        "GET", "/api/v1/system/ping", handler=ping, summary="Ping", answer=PingAnswer, refusals=()
    ),
    calls.Route(
        "GET",
        "/api/v1/system/status",
        handler=status,
        summary="Version, uptime, health of each part, queue depth and the last minutes' activity",
        answer=StatusAnswer,
        refusals=(),
    ),
)
