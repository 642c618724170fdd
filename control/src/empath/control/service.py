"""The control service: the management API over HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from empath.control import api, audit
from empath.core import bus as bus_module
from empath.core import errors, names, services, store
from empath.core.settings import Settings, parse_hostport

log = logging.getLogger("empath.control")


def token_of(settings: Settings) -> str:
    if settings.control_token is not None:
        return settings.control_token.get_secret_value()
    if settings.control_token_file is not None:
        token = settings.control_token_file.read_text().strip()
        if token:
            return token
    raise errors.ConfigurationError(
        "EMPATH_CONTROL_TOKEN or EMPATH_CONTROL_TOKEN_FILE is required: the control API "
        "never runs without authentication"
    )


async def run(runtime: services.Runtime) -> None:
    settings = runtime.settings
    token = token_of(settings)
    objects = store.ObjectStore(settings)
    bus = await bus_module.connect(settings, name="control")
    runner: web.AppRunner | None = None
    try:
        heartbeat = asyncio.create_task(bus.heartbeat("control", runtime.stop))
        app = api.application(
            bus=bus,
            objects=objects,
            token=token,
            audit_log=audit.AuditLog(settings.control_audit_file),
            services=await bus.key_value(names.SERVICES_BUCKET, ttl=names.HEARTBEAT_TTL_SECONDS),
            dns_cache=await bus.key_value(names.DNS_BUCKET),
            overrides=await bus.key_value(names.OVERRIDES_BUCKET),
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        host, port = parse_hostport(settings.control_listen)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            raise errors.ConfigurationError(
                f"EMPATH_CONTROL_LISTEN: cannot listen on {settings.control_listen}: "
                f"{error.strerror}"
            ) from error
        runtime.ready("control", f"http://{host}:{port}")
        await runtime.stop.wait()
        await heartbeat
    finally:
        if runner is not None:
            await runner.cleanup()
        await bus.close()
        objects.close()
    log.info("stopped")
