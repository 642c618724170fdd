"""The control service: the management API over HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import http_exceptions, web

from empath.control import api, audit, link, tokens
from empath.core import addresses, errors, services, store

log = logging.getLogger("empath.control")


class HttpLog(logging.Logger):
    """aiohttp's server log. aiohttp logs a request it refuses before any handler runs (a
    request line over its limit, bytes that are not HTTP) as an exception with a traceback;
    a client's bad bytes are no fault of the service, so that is one line at WARNING here.
    Anything else stays an exception with its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, http_exceptions.HttpProcessingError):
            self.warning("%s: %s", str(msg) % args, exc_info, **kwargs)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)


def http_log() -> HttpLog:
    logger = HttpLog("empath.control.http")
    logger.parent = log
    return logger


async def run(runtime: services.Runtime) -> None:
    settings = runtime.settings
    known = tokens.load(settings)
    objects = store.ObjectStore(settings)
    connection = await link.Link.open(settings)
    ending = asyncio.Event()
    keeper = asyncio.create_task(link.keep(connection, settings, ending))
    # The probes the operator points at (`EMPATH_HEALTH_LISTEN`) fail too while NATS is lost.
    runtime.checks.append(connection.problem)
    runner: web.AppRunner | None = None
    try:
        app = api.application(
            connection=connection,
            objects=objects,
            tokens=known,
            audit_log=audit.AuditLog(settings.control_audit_file),
            configured_plugins=settings.plugins,
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5, logger=http_log())
        await runner.setup()
        host, port = addresses.parse_hostport(settings.control_listen)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            raise errors.ConfigurationError(
                f"EMPATH_CONTROL_LISTEN: cannot listen on {settings.control_listen}: "
                f"{error.strerror}"
            ) from error
        log.info("control tokens: %s", ", ".join(known.names))
        runtime.ready("control", f"http://{host}:{port}")
        await runtime.stop.wait()
    finally:
        ending.set()  # the keeper ends with the service, whatever ended it
        await keeper
        if runner is not None:
            await runner.cleanup()
        await connection.bus.close()
        objects.close()
    log.info("stopped")
