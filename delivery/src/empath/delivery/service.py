"""The delivery service: workers on the shared jobs consumer, with their DNS cache, connection
pool, and the per-destination limits and circuit breakers they share with every other worker.

On stop it takes no new job, finishes the attempts in flight (their outcomes are published),
and closes the pooled sessions with QUIT.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from empath.core import bus as bus_module
from empath.core import names, pluginevents, services, store
from empath.delivery import checks, circuit, limits, pool, resolver, worker

log = logging.getLogger("empath.delivery")


async def run(runtime: services.Runtime) -> None:
    settings = runtime.settings
    objects = store.ObjectStore(settings)
    bus = await bus_module.connect(settings, name="delivery")
    connections = pool.Pool(
        messages_per_connection=settings.delivery_messages_per_connection,
        idle_timeout=settings.delivery_idle_timeout,
    )
    destinations: limits.Shared | None = None
    breakers: circuit.Breakers | None = None
    try:
        dns_cache = await bus.key_value(names.DNS_BUCKET)
        flags = await bus.key_value(names.FLAGS_BUCKET)
        await bus.key_value(names.QUEUE_BUCKET)  # there (made by the spool) before a job
        queue = checks.Records(bus.nc, timeout=settings.publish_timeout)
        overrides = await bus.key_value(names.OVERRIDES_BUCKET)
        routes = resolver.Resolver(settings, dns_cache, overrides)

        async def invalidate(msg: Msg) -> None:
            routes.forget(msg.data.decode() or "*")

        await bus.nc.subscribe(names.DNS_INVALIDATE_SUBJECT, cb=invalidate)
        shared = await bus.key_value(names.LIMITS_BUCKET, ttl=names.LIMITS_TTL_SECONDS)
        destinations = limits.Shared(shared, settings=settings)
        breakers = circuit.Breakers(
            destinations.records,
            failures=settings.delivery_circuit_failures,
            window=settings.delivery_circuit_window,
            cooldown=settings.delivery_circuit_cooldown,
            probe_lease=2 * settings.delivery_connect_timeout,
            me=destinations.me,
        )
        connections.start()
        events_out = pluginevents.Publisher(
            bus,
            wanted={event for p in settings.plugins for event in p.event_hooks},
            timeout=settings.publish_timeout,
        )
        destinations.start()
        breakers.start()
        workers = worker.Worker(
            settings=settings,
            bus=bus,
            objects=objects,
            routes=routes,
            connections=connections,
            limits=destinations,
            flags=flags,
            queue=queue,
            plugin_events=events_out,
            breakers=breakers,
        )
        heartbeat = asyncio.create_task(bus.heartbeat("delivery", runtime.stop))
        runtime.ready("delivery", f"{settings.delivery_concurrency} concurrent attempts")
        await bus_module.consume(
            bus,
            stream=names.JOBS_STREAM,
            subject=names.JOBS_SUBJECT,
            durable=names.DELIVERY_JOBS_CONSUMER,
            handle=workers.handle,
            stop=runtime.stop,
            batch=settings.delivery_concurrency,
            concurrency=settings.delivery_concurrency,
            ack_wait=settings.delivery_ack_wait,
            # A job that fails before its attempt comes back later each time, and after
            # `worker.MAX_DELIVERIES` it is counted as a deferred attempt (`Worker.handle`).
            backoff_to=120.0,
        )
        await heartbeat
        await events_out.close()
    finally:
        if breakers is not None:
            await breakers.close()
        if destinations is not None:
            await destinations.close()  # the slots it held go back at once
        await connections.close()
        await bus.close()
        objects.close()
    log.info("stopped")
