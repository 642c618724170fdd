"""A delivery worker: one job in, one `attempted` event out.

A job is first checked against the queue record it names (`checks`): one that is not the job
the spool dispatched is refused, and nothing is sent.

The job's recipients are grouped by domain; each domain is routed (MX or override) and tried
MX host by MX host until one answers. The outcome of every recipient goes into one `attempted`
event; the job is acked only after JetStream acknowledged that event, so a worker killed in
the middle leaves the job to be redelivered, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from empath.core import (
    addresses,
    bus,
    consumers,
    errors,
    events,
    ids,
    logs,
    metrics,
    names,
    pluginevents,
    store,
    telemetry,
)
from empath.core import flags as flag_cache
from empath.core.settings import Settings
from empath.delivery import checks, circuit, client, limits, pool, resolver, throttle, tls

log = logging.getLogger("empath.delivery.worker")
tracer = telemetry.tracer("empath.delivery")


# Seconds an outcome is tried again while NATS is unreachable before its job is sent back.
OUTCOME_PATIENCE = 300.0
# Deliveries of one job (its first included) before it counts as a deferred attempt unsent: with
# the consumer's back-off (5, 10, 20, 40 s) about a minute and a quarter of trying.
MAX_DELIVERIES = 5


def outcome_of(error: resolver.DeliveryError) -> events.Outcome:
    """Deferred only when the error says so by its type; failed otherwise."""
    return "deferred" if isinstance(error, resolver.DeliveryDeferred) else "failed"


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: bus.Bus,
        objects: store.ObjectStore,
        routes: resolver.Resolver,
        connections: pool.Pool,
        limits: throttle.Limits,
        flags: KeyValue,
        queue: checks.Records,
        plugin_events: pluginevents.Publisher | None = None,
        breakers: circuit.Breakers | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.objects = objects
        self.routes = routes
        self.connections = connections
        self.limits = limits
        # Read at most every half second, not once per job (a round trip to NATS each): a
        # freeze stops new attempts within half a second of being set.
        self.frozen = flag_cache.Cached(flags)
        self.queue = queue  # the queue records, read only: each job is checked against its own
        self.plugin_events = plugin_events
        self.breakers = breakers

    async def handle(self, msg: Msg) -> None:
        # While the queue is frozen a job is not even read: it goes back to the stream.
        if await self.frozen():
            raise errors.TemporaryError("the queue is frozen: job put back")
        with consumers.receive(
            msg, events.DeliveryJob, log=log, tracer=tracer, span="delivery.attempt"
        ) as inbound:
            job = inbound.event
            refused = await checks.refusal(self.queue, job)
            if refused is not None:
                metrics.jobs_refused.add(1)
                inbound.log.warning(
                    "job for attempt %d refused, nothing sent: %s", job.attempt, refused
                )
                return
            started = datetime.now(UTC)
            came = bus.deliveries(msg)
            if came > MAX_DELIVERIES:
                # Put back again and again before any outcome (a failure outside the attempt,
                # a worker dying on it, a long freeze): it counts as a deferred attempt now,
                # so the retry schedule and `max_attempts` apply to it like to any other.
                inbound.log.warning(
                    "job for attempt %d came back %d times without an outcome: deferred",
                    job.attempt,
                    came - 1,
                )
                reply = f"451 4.3.0 The delivery job came back {came - 1} times without an outcome"
                results = [
                    events.RecipientResult(address=r.address, outcome="deferred", reply=reply)
                    for r in job.envelope.recipients
                ]
            else:
                results = await self.attempt(job)
            _measure(results, seconds=(datetime.now(UTC) - started).total_seconds())
            event = events.Attempted(
                id=job.id,
                attempt=job.attempt,
                started_at=started,
                finished_at=datetime.now(UTC),
                worker=ids.INSTANCE,
                results=tuple(results),
            )
            await self.report(event)
            if self.plugin_events is not None and self.plugin_events.wants("delivery_attempt"):
                # Never waited for (see pluginevents), and not even built when no plugin
                # asked for them.
                for told in pluginevents.delivery_attempts(job, results, at=event.finished_at):
                    self.plugin_events.emit(told)
        for result in results:
            inbound.log.info(
                "to=<%s> %s via %s tls=%s: %s",
                result.address,
                result.outcome,
                result.remote,
                result.tls,
                result.reply,
            )

    async def report(self, event: events.Attempted) -> None:
        """Publish the outcome, trying again while NATS is away (a restart): the remote has
        taken the mail, and a job sent back for want of its outcome would deliver it again.
        The job is kept meanwhile (in-progress acks); the same message id makes a repeat
        harmless. Past `OUTCOME_PATIENCE` the job goes back after all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTCOME_PATIENCE
        pause = 0.2
        while True:
            try:
                await self.bus.publish(
                    names.ATTEMPTED_SUBJECT, event, msg_id=f"{event.id}.{event.attempt}"
                )
                return
            except errors.BusUnavailable as error:
                if loop.time() + pause > deadline:
                    raise
                logs.for_message(log, event.id).warning(
                    "outcome not published, trying again in %.1fs: %s", pause, error
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def attempt(self, job: events.DeliveryJob) -> list[events.RecipientResult]:
        try:
            # A first attempt dispatched on arrival brings the body along.
            body = job.body if job.body is not None else await self.objects.get(job.body_key)
        except errors.NotFound:
            return [
                events.RecipientResult(
                    address=r.address, outcome="failed", reply=events.BODY_MISSING
                )
                for r in job.envelope.recipients
            ]
        except errors.StoreUnavailable as error:
            # An attempt that failed here, deferred with the retry schedule's back-off: not a
            # job sent back to be redelivered at once, for ever, with no attempt counted.
            logs.for_message(log, job.id).warning("cannot read the body: %s", error)
            reply = "451 4.3.0 The message body cannot be read from the spool now"
            return [
                events.RecipientResult(address=r.address, outcome="deferred", reply=reply)
                for r in job.envelope.recipients
            ]
        by_domain: dict[str, list[events.Recipient]] = collections.defaultdict(list)
        for recipient in job.envelope.recipients:
            by_domain[addresses.domain_of(recipient.address)].append(recipient)
        if len(by_domain) == 1:  # the usual case: no task of its own
            [(domain, recipients)] = by_domain.items()
            return await self.deliver_safely(job, domain, recipients, body)
        per_domain = await asyncio.gather(
            *(
                self.deliver_safely(job, domain, recipients, body)
                for domain, recipients in by_domain.items()
            )
        )
        return [result for results in per_domain for result in results]

    async def deliver_safely(
        self,
        job: events.DeliveryJob,
        domain: str,
        recipients: list[events.Recipient],
        body: bytes,
    ) -> list[events.RecipientResult]:
        """`deliver`, with whatever it did not foresee made an outcome: deferred with the
        reason. An error that escaped would send the job back to the stream again and again
        without an attempt counted, so `max_attempts` would never apply."""
        try:
            return await self.deliver(job, domain, recipients, body)
        except Exception as error:
            logs.for_message(log, job.id).exception("delivery to %s failed unexpectedly", domain)
            reply = f"451 4.3.0 Delivery to {domain} failed: {error.__class__.__name__}"
            return [
                events.RecipientResult(address=r.address, outcome="deferred", reply=reply)
                for r in recipients
            ]

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
            return everyone(outcome_of(error), error.reply)
        try:
            return await self._limited(
                domain,
                hops=hops,
                policy=policy,
                job=job,
                recipients=recipients,
                body=body,
                everyone=everyone,
            )
        except limits.LimitsUnavailable as error:
            # NATS away: the shared limits cannot be kept, so no session is opened.
            logs.for_message(log, job.id).warning("delivery to %s held back: %s", domain, error)
            return everyone(
                "deferred", f"451 4.3.0 Delivery to {domain} waits: its limits cannot be read now"
            )

    async def _limited(
        self,
        domain: str,
        *,
        hops: list[resolver.Hop],
        policy: str,
        job: events.DeliveryJob,
        recipients: list[events.Recipient],
        body: bytes,
        everyone: Callable[[events.Outcome, str], list[events.RecipientResult]],
    ) -> list[events.RecipientResult]:
        """Through the domain's circuit breaker and in one of its slots: each MX host in turn."""
        decision = circuit.GO if self.breakers is None else await self.breakers.check(domain)
        if not decision.go:
            return everyone("deferred", decision.reply)  # no connection: the circuit is open
        last: resolver.DeliveryError | None = None
        async with self.limits.slot(domain):
            for hop in hops:
                try:
                    async with asyncio.timeout(self.settings.delivery_session_timeout):
                        results = await self._session(
                            hop,
                            domain=domain,
                            policy=policy,
                            job=job,
                            recipients=recipients,
                            body=body,
                        )
                    await self._circuit(domain, None, probe=decision.probe)
                    return results
                except resolver.DeliveryError as error:
                    last = error  # this MX host did not answer: the next one
                except TimeoutError:
                    last = resolver.DeliveryDeferred(
                        f"451 4.4.2 The session with {hop.name}[{hop.address}]:{hop.port} took "
                        f"longer than {self.settings.delivery_session_timeout:g} s"
                    )
        assert last is not None
        if isinstance(last, resolver.DeliveryDeferred):
            await self._circuit(domain, last.reply, probe=decision.probe)
        return everyone(outcome_of(last), last.reply)

    async def _circuit(self, domain: str, failure: str | None, *, probe: bool) -> None:
        """Tell the breaker how the domain's sessions went. Its record not being written
        changes no recipient's outcome (one delivered must not be sent again)."""
        if self.breakers is None:
            return
        try:
            if failure is None:
                await self.breakers.succeeded(domain)
            else:
                await self.breakers.failed(domain, failure, probe=probe)
        except limits.LimitsUnavailable as error:
            log.warning("cannot update the circuit breaker of %s: %s", domain, error)

    async def _session(
        self,
        hop: resolver.Hop,
        *,
        domain: str,
        policy: str,
        job: events.DeliveryJob,
        recipients: list[events.Recipient],
        body: bytes,
    ) -> list[events.RecipientResult]:
        """One MX host: a session (new or reused) and the transaction, or `DeliveryError`
        when the host did not take the transaction (the caller tries the next one).

        A kept session is not probed before use (no RSET after a finished transaction): one
        the remote closed meanwhile fails before MAIL is accepted, before any byte of the body
        went out, and the message goes on a new session instead."""

        def opener() -> Awaitable[client.Connection]:
            return client.connect(
                hop,
                helo=self.settings.hostname,
                policy=policy,
                ca_file=self.settings.tls_ca_file,
                connect_timeout=self.settings.delivery_connect_timeout,
                command_timeout=self.settings.delivery_command_timeout,
            )

        connection = await self.connections.acquire(hop, policy, opener)
        await self.limits.pace(domain)
        while True:
            kept = connection.messages > 0
            try:
                results = await client.transact(connection, job, recipients, body)
            except resolver.DeliveryError:
                connection.broken = True
                await self.connections.release(connection, policy, reusable=False)
                if not kept:
                    raise
                connection = await self.connections.acquire(hop, policy, opener, fresh=True)
                continue
            except BaseException:
                # Ran out of time or failed unforeseen: the session is in an unknown state
                # and never goes back to the pool.
                connection.broken = True
                await self.connections.release(connection, policy, reusable=False)
                raise
            reusable = all(not r.reply.startswith("421") for r in results)
            await self.connections.release(connection, policy, reusable=reusable)
            return results


_COUNTERS = {
    "delivered": metrics.delivery_delivered,
    "failed": metrics.delivery_failed,
    "deferred": metrics.delivery_retrying,
}


def _measure(results: list[events.RecipientResult], *, seconds: float) -> None:
    """One attempt in the metrics: its time, and each recipient's outcome by reply class."""
    worst = next(
        (o for o in ("deferred", "failed", "delivered") if any(r.outcome == o for r in results)),
        "none",
    )
    metrics.delivery_attempts.add(1, {"outcome": worst})
    metrics.delivery_duration.record(seconds, {"outcome": worst})
    for result in results:
        _COUNTERS[result.outcome].add(
            1,
            {
                "status_class": metrics.status_class(result.reply),
                "enhanced": metrics.enhanced_class(result.reply),
                "tls": "yes" if result.tls and not result.tls.startswith("none") else "no",
            },
        )
