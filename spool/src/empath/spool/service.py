"""The spool service: intake, scheduling, attempt outcomes and bounces, and its query API.

Any number of replicas may run: they share one durable consumer, and records are created with
KV compare-and-set, so a message is recorded once however often its event arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta

from empath.core import bodies as bodies_module
from empath.core import bus as bus_module
from empath.core import metrics, names, periodic, pluginevents, services, signing, store
from empath.spool import api, intake, notices, outcomes, records, removals, scheduler, view

log = logging.getLogger("empath.spool")


async def run(runtime: services.Runtime) -> None:
    settings = runtime.settings
    # Refuse to start without the keys (unless signing is off), before anything connects.
    verifier = signing.verifier_of(settings, signing.required_signer(settings, "spool"))
    objects = store.ObjectStore(settings)
    bus = await bus_module.connect(settings, name="spool")
    try:
        kv = await bus.key_value(names.QUEUE_BUCKET)
        flags = await bus.key_value(names.FLAGS_BUCKET)
        live = view.QueueView(kv, connection=bus.nc)
        queue_records = records.Records(kv, watching=live)
        following = asyncio.create_task(live.run(runtime.stop), name="spool-view")
        metrics.observe_queue(live.snapshot, until=runtime.stop)
        # Serve and schedule only once the view holds the whole queue.
        ready = asyncio.create_task(live.ready.wait())
        await asyncio.wait({following, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        removal = removals.Removals(objects)
        bodies = bodies_module.Bodies(objects=objects, js=bus.js)
        events_out = pluginevents.Publisher(
            bus,
            wanted={event for p in settings.plugins for event in p.event_hooks},
            timeout=settings.publish_timeout,
        )
        results = outcomes.Outcomes(
            plugin_events=events_out,
            settings=settings,
            records=queue_records,
            bodies=bodies,
            removals=removal,
            notices=notices.Notices(settings=settings, bus=bus, bodies=bodies),
            live=live,
        )
        planner = scheduler.Scheduler(
            settings=settings,
            records=queue_records,
            # Jobs go out unsigned: delivery checks a job against the record it names, never a
            # signature, and an Ed25519 signature of a job with its body cost the spool 50-110
            # us a message. What the spool queues itself (its DSNs' `received`) stays signed.
            bus=dataclasses.replace(bus, signer=None),
            flag_store=flags,
            live=live,
            bodies=bodies,
            removals=removal,
        )
        unsigned_until = None
        if verifier is not None:
            # Read (the first time, written) once; a NATS node away at start is waited out.
            unsigned_until = await periodic.until_done(
                lambda: intake.unsigned_window(bus, flags, grace=settings.event_unsigned_grace),
                stop=runtime.stop,
                log=log,
                what="reading the upgrade window of unsigned received events",
                delay=1.0,
                backoff_to=10.0,
            )
            if unsigned_until is None:
                return  # stopped meanwhile
        worker = intake.Intake(
            dispatcher=planner,
            verifier=verifier,
            unsigned_until=unsigned_until,
        )
        query = api.QueryAPI(
            bus.nc, queue_records, flags, live, objects, frozen=planner.frozen_flag
        )
        await query.start()
        consumers = [
            (
                names.RECEIVED_STREAM,
                names.RECEIVED_SUBJECT,
                names.SPOOL_RECEIVED_CONSUMER,
                worker.handle,
            ),
            (
                names.ATTEMPTED_STREAM,
                names.ATTEMPTED_SUBJECT,
                names.SPOOL_ATTEMPTED_CONSUMER,
                results.handle,
            ),
        ]
        tasks = [
            asyncio.create_task(
                bus_module.consume(
                    bus,
                    stream=stream,
                    subject=subject,
                    durable=durable,
                    handle=handle,
                    stop=runtime.stop,
                    batch=settings.spool_concurrency,
                    concurrency=settings.spool_concurrency,
                ),
                name=durable,
            )
            for stream, subject, durable, handle in consumers
        ]
        tasks.append(asyncio.create_task(planner.run(runtime.stop), name="spool-scheduler"))
        tasks.append(asyncio.create_task(removal.run(runtime.stop), name="spool-removals"))

        async def recorded(message_id: str) -> bool:
            # The view knows nearly every body's record: the bucket is asked only about the
            # few it does not (an orphan's), not about every message waiting.
            return live.index.known(message_id) is not None or await queue_records.exists(
                message_id
            )

        tasks.append(
            asyncio.create_task(
                removal.sweeping(
                    runtime.stop,
                    lifetime=timedelta(seconds=settings.max_queue_lifetime),
                    caught_up=lambda: intake.caught_up(bus),
                    recorded=recorded,
                ),
                name="spool-sweep",
            )
        )
        tasks.append(following)
        tasks.append(
            asyncio.create_task(
                bus.heartbeat("spool", runtime.stop, details=bodies_module.spool_heartbeat)
            )
        )
        runtime.ready("spool", f"queue state in KV bucket {names.QUEUE_BUCKET}")
        await runtime.stop.wait()
        await asyncio.gather(*tasks)
        await events_out.close()
        await query.stop()
    finally:
        await bus.close()
        objects.close()
    log.info("stopped")
