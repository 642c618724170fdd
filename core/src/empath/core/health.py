"""Liveness and readiness over HTTP, for Kubernetes probes (`EMPATH_HEALTH_LISTEN`).

`GET /livez` answers 200 while the event loop runs. `GET /readyz` answers 200 once the
service has said it is ready and until it starts shutting down, so a pod that drains its
connections is taken out of its Service's endpoints first, and not while one of the service's
`Runtime.checks` gives a reason (the control service's lost NATS connection). Both answer 503
otherwise. `GET /metrics` answers the process's metrics in Prometheus' text format (see
`telemetry`), for clusters that scrape instead of push.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

from empath.core import addresses, telemetry
from empath.core.services import Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Health:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ready = False

    def mark_ready(self, service: str, detail: str) -> None:
        self.ready = True

    async def livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        down = [reason for check in self.runtime.checks if (reason := check()) is not None]
        if self.ready and not self.runtime.stop.is_set() and not down:
            return web.Response(text="ready\n")
        if self.runtime.stop.is_set():
            reason = "shutting down"
        else:
            reason = "; ".join(down) if self.ready else "starting"
        return web.Response(status=503, text=f"{reason}\n")


@contextlib.asynccontextmanager
async def serving(runtime: Runtime, listen: str | None) -> AsyncIterator[None]:
    """Serve the probes on `listen` (host:port) for as long as the block runs."""
    if listen is None:
        yield
        return
    health = Health(runtime)
    previous = runtime.on_ready

    def on_ready(service: str, detail: str) -> None:
        health.mark_ready(service, detail)
        previous(service, detail)

    runtime.on_ready = on_ready
    routes = {"/livez": health.livez, "/readyz": health.readyz, "/metrics": metrics}
    async with listening(listen, routes):
        yield


async def metrics(request: web.Request) -> web.Response:
    """The process's metrics in Prometheus' text format."""
    body, content_type = telemetry.prometheus_text()
    return web.Response(body=body, headers={"Content-Type": content_type})


@contextlib.asynccontextmanager
async def listening(listen: str, routes: Mapping[str, Handler]) -> AsyncIterator[None]:
    """GET `routes` served on `listen` (host:port; all addresses when no host) while the block
    runs."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = addresses.parse_hostport(listen, default_host="0.0.0.0")
    await web.TCPSite(runner, host, port).start()
    try:
        yield
    finally:
        await runner.cleanup()
