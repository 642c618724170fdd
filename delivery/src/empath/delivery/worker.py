"""A delivery worker: one job in, one `attempted` event out.

The job's recipients are grouped by domain; each domain is routed (MX or override) and tried
MX host by MX host until one answers. The outcome of every recipient goes into one `attempted`
event; the job is acked only after JetStream acknowledged that event, so a worker killed in
the middle leaves the job to be redelivered, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from empath.core import (
    addresses,
    bus,
    consumers,
    errors,
    events,
    flags,
    ids,
    names,
    store,
    telemetry,
)
from empath.core.settings import Settings
from empath.delivery import client, pool, resolver, throttle, tls

log = logging.getLogger("empath.delivery.worker")
tracer = telemetry.tracer("empath.delivery")


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: bus.Bus,
        objects: store.ObjectStore,
        routes: resolver.Resolver,
        connections: pool.Pool,
        limits: throttle.Throttle,
        flags: KeyValue,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.objects = objects
        self.routes = routes
        self.connections = connections
        self.limits = limits
        self.flags = flags

    async def handle(self, msg: Msg) -> None:
        # While the queue is frozen a job is not even read: it goes back to the stream.
        if await flags.is_frozen(self.flags):
            raise errors.TemporaryError("the queue is frozen: job put back")
        with consumers.receive(
            msg, events.DeliveryJob, log=log, tracer=tracer, span="delivery.attempt"
        ) as inbound:
            job = inbound.event
            started = datetime.now(UTC)
            results = await self.attempt(job)
            event = events.Attempted(
                id=job.id,
                attempt=job.attempt,
                started_at=started,
                finished_at=datetime.now(UTC),
                worker=ids.INSTANCE,
                results=tuple(results),
            )
            await self.bus.publish(names.ATTEMPTED_SUBJECT, event, msg_id=f"{job.id}.{job.attempt}")
        for result in results:
            inbound.log.info(
                "to=<%s> %s via %s tls=%s: %s",
                result.address,
                result.outcome,
                result.remote,
                result.tls,
                result.reply,
            )

    async def attempt(self, job: events.DeliveryJob) -> list[events.RecipientResult]:
        try:
            body = await self.objects.get(job.body_key)
        except errors.NotFound:
            reply = "554 5.3.0 The message body is missing from the spool"
            return [
                events.RecipientResult(address=r.address, outcome="failed", reply=reply)
                for r in job.envelope.recipients
            ]
        by_domain: dict[str, list[events.Recipient]] = collections.defaultdict(list)
        for recipient in job.envelope.recipients:
            by_domain[addresses.domain_of(recipient.address)].append(recipient)
        per_domain = await asyncio.gather(
            *(
                self.deliver(job, domain, recipients, body)
                for domain, recipients in by_domain.items()
            )
        )
        return [result for results in per_domain for result in results]

    async def deliver(
        self,
        job: events.DeliveryJob,
        domain: str,
        recipients: list[events.Recipient],
        body: bytes,
    ) -> list[events.RecipientResult]:
        """Deliver to one domain: each MX host in turn until one answers."""

        def everyone(
            outcome: events.Outcome, reply: str, tls_note: str | None = None
        ) -> list[events.RecipientResult]:
            return [
                events.RecipientResult(
                    address=r.address, outcome=outcome, reply=reply, tls=tls_note
                )
                for r in recipients
            ]

        policy = tls.policy_for(self.settings, domain)
        try:
            hops = await self.routes.route(domain)
        except resolver.DeliveryError as error:
            return everyone("deferred" if error.temporary else "failed", error.reply)
        last: resolver.DeliveryError | None = None
        async with self.limits.slot(domain):
            for hop in hops:
                try:
                    connection = await self.connections.acquire(
                        hop,
                        policy,
                        lambda hop=hop: client.connect(  # type: ignore[misc]
                            hop,
                            helo=self.settings.hostname,
                            policy=policy,
                            ca_file=self.settings.tls_ca_file,
                            connect_timeout=self.settings.delivery_connect_timeout,
                            command_timeout=self.settings.delivery_command_timeout,
                        ),
                    )
                except resolver.DeliveryError as error:
                    last = error
                    continue
                await self.limits.pace(domain)
                try:
                    results = await client.transact(connection, job, recipients, body)
                except resolver.DeliveryError as error:
                    await self.connections.release(connection, policy, reusable=False)
                    last = error
                    continue  # the session broke before MAIL was accepted: next MX host
                reusable = all(not r.reply.startswith("421") for r in results)
                await self.connections.release(connection, policy, reusable=reusable)
                return results
        assert last is not None
        return everyone("deferred" if last.temporary else "failed", last.reply)
