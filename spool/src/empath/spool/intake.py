"""Intake: every `received` event becomes a `queued` record in the queue state.

An event that is not recorded is dropped with a line naming its queue id, so nothing leaves
the spool's intake without a trace: an INFO line when the message is recorded already (a
repeat, routine with at-least-once delivery).

An event is recorded only if it is authentic: signed by ingress, or by this spool (its DSNs),
with a key it trusts (`empath.core.signing`). Any other is refused before it is even decoded:
logged, counted (`empath.spool.received.refused.total`) and dropped, and its body is left
alone (a forged event may well name another message's body).

The body is not looked up here. An event whose body is gone exists when ingress could not
confirm its publish, removed the body and answered 451 while the event did reach JetStream;
that is rare, and a look at the bucket for every message to catch it cost a request per
message. Such a message is found at its first attempt instead (`outcomes.void`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg

from empath.core import consumers, events, metrics, names, queue, signing, telemetry
from empath.spool import records, scheduler

log = logging.getLogger("empath.spool.intake")
tracer = telemetry.tracer("empath.spool")


class Intake:
    """With a `dispatcher`, a message due now goes out for its first attempt on arrival
    (`Scheduler.arrive`); without one it is recorded as queued, for the scheduler's ticks."""

    def __init__(
        self,
        *,
        records: records.Records,
        dispatcher: scheduler.Scheduler | None = None,
        verifier: signing.Verifier | None = None,
    ) -> None:
        self.records = records
        self.dispatcher = dispatcher
        self.verifier = verifier  # None: signing is off, every event is taken

    async def handle(self, msg: Msg) -> None:
        """Record one accepted message; safe to run twice (and on two replicas) for one event."""
        if self.verifier is not None:
            try:
                self.verifier.verify(names.RECEIVED_SUBJECT, msg.data, msg.headers)
            except signing.Unauthentic as error:
                metrics.received_refused.add(1, {"reason": error.reason})
                log.warning(
                    "received event refused, not queued: %s (stream sequence %s, msg id %s)",
                    error,
                    _sequence(msg),
                    (msg.headers or {}).get("Nats-Msg-Id", "")[:100],
                )
                return
        with consumers.receive(
            msg, events.Received, log=log, tracer=tracer, span="spool.intake"
        ) as inbound:
            event, mlog = inbound.event, inbound.log
            entry = queue.Entry.from_received(event, traceparent=telemetry.traceparent())
            if self.dispatcher is not None:
                recorded = await self.dispatcher.arrive(
                    entry, body=event.body, now=datetime.now(UTC)
                )
            else:
                recorded = await self.records.create(entry)
            if recorded:
                mlog.info(
                    "queued from=<%s> nrcpt=%d size=%d",
                    event.envelope.sender,
                    len(event.envelope.recipients),
                    event.size,
                )
            else:
                # A redelivered event (or one two replicas both took): the first one counts.
                mlog.info("already recorded: dropping the repeated received event")


def _sequence(msg: Msg) -> int | None:
    try:
        return msg.metadata.sequence.stream
    except (AttributeError, ValueError):
        return None
