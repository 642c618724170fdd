"""The ingress service: SMTP listeners in front of the spool.

It waits for the object store and NATS at start (a pod may start before them), then listens.
On stop it closes the listeners, tells idle sessions 421, lets transactions in flight finish
for `EMPATH_SHUTDOWN_GRACE` seconds, and only then lets go of NATS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from empath.core import (
    addresses,
    bodies,
    errors,
    names,
    periodic,
    pluginevents,
    services,
    signing,
    store,
)
from empath.core import bus as bus_module
from empath.core.settings import Settings
from empath.ingress import (
    cmodules,
    credentials,
    handlers,
    limits,
    plugins,
    policies,
    protocol,
    reload,
)

log = logging.getLogger("empath.ingress")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (ssl.SSLError, OSError) as error:
        raise errors.ConfigurationError(
            f"EMPATH_TLS_CERT_FILE/EMPATH_TLS_KEY_FILE: cannot load: {error}"
        ) from error
    return context


async def wait_for_store(objects: store.ObjectStore, stop: asyncio.Event) -> bool:
    """Wait until the bucket is there (a pod may start before the store); False if stopped.

    Only the store being away is waited out; any other error is a bug and ends the service.
    """

    async def reach() -> bool:
        await objects.ensure_bucket()
        return True

    reached = await periodic.until_done(
        reach,
        stop=stop,
        log=log,
        what="waiting for the object store",
        delay=0.5,
        backoff_to=10.0,
        retry=(errors.StoreUnavailable,),
    )
    return reached is not None


async def run(runtime: services.Runtime) -> None:
    settings = runtime.settings
    signing.required_signer(settings, "ingress")  # no key, no start (unless signing is off)
    context = tls_context(settings)
    auth = (
        credentials.Credentials.load(settings.auth_credentials_file)
        if settings.auth_credentials_file
        else None
    )
    objects = store.ObjectStore(settings)
    try:
        if not await wait_for_store(objects, runtime.stop):
            return
        bus = await bus_module.connect(settings, name="ingress")
        try:
            await serve(runtime, objects=objects, bus=bus, tls=context, auth=auth)
        finally:
            await bus.close()
    finally:
        objects.close()


async def serve(
    runtime: services.Runtime,
    *,
    objects: store.ObjectStore,
    bus: bus_module.Bus,
    tls: ssl.SSLContext | None,
    auth: credentials.Credentials | None,
) -> None:
    settings = runtime.settings
    # A plugin that cannot be loaded stops the service at start (ConfigurationError).
    runtime_plugins = plugins.Runtime(settings.plugins, bus=bus, settings=settings)
    try:
        await _serve(
            runtime, settings, objects=objects, bus=bus, tls=tls, auth=auth, hooks=runtime_plugins
        )
    finally:
        await runtime_plugins.close()


async def _serve(
    runtime: services.Runtime,
    settings: Settings,
    *,
    objects: store.ObjectStore,
    bus: bus_module.Bus,
    tls: ssl.SSLContext | None,
    auth: credentials.Credentials | None,
    hooks: plugins.Runtime,
) -> None:
    connections = limits.Connections(
        total=settings.max_connections, per_ip=settings.max_connections_per_ip
    )
    session_limits = protocol.Limits(
        max_message_size=settings.max_message_size,
        max_recipients=settings.max_recipients,
        max_line_length=settings.max_line_length,
        max_errors=settings.max_errors,
        command_timeout=settings.smtp_command_timeout,
        data_timeout=settings.smtp_data_timeout,
        data_deadline=settings.smtp_data_deadline,
    )
    policy = policies.RelayPolicy.of(
        settings.relay_domains,
        settings.trusted_networks,
        hostname=settings.hostname,
        postmaster=settings.postmaster,
    )
    publisher = pluginevents.Publisher(
        bus,
        wanted={event for p in settings.plugins for event in p.event_hooks},
        timeout=settings.publish_timeout,
    )
    # A small body stays out of the bucket only once every spool running can read it from
    # its event (`empath.core.bodies`).
    spools = bodies.SpoolsReady(
        await bus.key_value(names.SERVICES_BUCKET, ttl=names.HEARTBEAT_TTL_SECONDS)
    )
    handler = handlers.QueueingHandler(
        objects=objects,
        bus=bus,
        full_dsn_from_untrusted=settings.full_dsn_from_untrusted,
        inline_body_limit=settings.inline_body_limit,
        body_in_event=lambda: spools.ready,
        plugin_events=publisher,
    )
    loop = asyncio.get_running_loop()
    listeners = [("smtp", settings.smtp_listen, False)]
    if settings.submission_listen:
        listeners.append(("submission", settings.submission_listen, True))

    servers: list[asyncio.Server] = []
    listening = []
    for name, address, auth_required in listeners:
        host, port = addresses.parse_hostport(address)
        listener = protocol.Listener(name=name, auth_required=auth_required)

        def factory(listener: protocol.Listener = listener) -> protocol.Session:
            return protocol.Session(
                handler,
                hostname=settings.hostname,
                limits=session_limits,
                listener=listener,
                policy=policy,
                connections=connections,
                credentials=auth,
                tls_context=tls,
                plugins=hooks,
                events=publisher,
            )

        try:
            server = await loop.create_server(factory, host=host, port=port, reuse_address=True)
        except OSError as error:
            for started in servers:
                started.close()
            raise errors.ConfigurationError(
                f"EMPATH_{name.upper()}_LISTEN: cannot listen on {address}: {error.strerror}"
            ) from error
        servers.append(server)
        listening.append(f"{name} on {host}:{port}")

    reloader = reload.Reloader(
        context=tls,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        auth=auth,
        auth_file=settings.auth_credentials_file,
    )
    # (With EMPATH_INLINE_BODY_LIMIT=0 every body is stored: nothing to look at.)
    looking = asyncio.create_task(
        spools.run(runtime.stop) if settings.inline_body_limit else runtime.stop.wait()
    )
    heartbeat = asyncio.create_task(
        bus.heartbeat("ingress", runtime.stop, details=lambda: {"plugins": hooks.published()})
    )
    told = [
        asyncio.create_task(cmodules.follow(bus, module, runtime.stop))
        for module in hooks.event_modules
    ]
    reloading = asyncio.create_task(reloader.run(runtime.stop, settings.tls_reload_interval))
    runtime.ready("ingress", ", ".join(listening))
    await runtime.stop.wait()
    await heartbeat
    await looking
    await reloading
    await asyncio.gather(*told)
    log.info("stopping: %d sessions open", len(connections))
    for server in servers:
        server.close()
    await connections.drain(settings.shutdown_grace)
    for server in servers:
        await server.wait_closed()
    await publisher.close()
    log.info("stopped")
