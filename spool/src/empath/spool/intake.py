"""Intake: every `received` event becomes a `queued` record in the queue state.

An event that is not recorded is dropped with a line naming its queue id, so nothing leaves
the spool's intake without a trace: a warning when its body is gone, an INFO line when the
message is recorded already (a repeat, routine with at-least-once delivery).
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from empath.core import consumers, events, queue, store, telemetry
from empath.spool import records

log = logging.getLogger("empath.spool.intake")
tracer = telemetry.tracer("empath.spool")


class Intake:
    def __init__(self, *, records: records.Records, objects: store.ObjectStore) -> None:
        self.records = records
        self.objects = objects

    async def handle(self, msg: Msg) -> None:
        """Record one accepted message; safe to run twice (and on two replicas) for one event."""
        with consumers.receive(
            msg, events.Received, log=log, tracer=tracer, span="spool.intake"
        ) as inbound:
            event, mlog = inbound.event, inbound.log
            if not await self.objects.exists(event.body_key):
                # Ingress removes the body when it could not confirm the publish and answered
                # 451: the client will send the message again, so this event is void.
                mlog.warning("body %s is missing: dropping the event", event.body_key)
                return
            entry = queue.Entry.from_received(event, traceparent=telemetry.traceparent())
            if await self.records.create(entry):
                mlog.info(
                    "queued from=<%s> nrcpt=%d size=%d",
                    event.envelope.sender,
                    len(event.envelope.recipients),
                    event.size,
                )
            else:
                # A redelivered event (or one two replicas both took): the first one counts.
                mlog.info("already recorded: dropping the repeated received event")
