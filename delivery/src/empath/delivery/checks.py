"""A job is sent only if it is the one the spool dispatched: checked against the queue record.

Why. NATS permissions let only the spool publish jobs, but whoever gets hold of the spool's
(or the admin's) credentials could publish a job naming another message's body and a
recipient of their own: the worker would send that body there (exfiltration). The spool
dispatches a job by marking the record `delivering` at that attempt, so a job is genuine only
if the record it names says so: same body, same attempt, `delivering`, and the same envelope
still to deliver (the sender, and exactly the recipients the record has open). Anything else
is refused before the body is read: logged, counted (`empath.delivery.jobs.refused.total`)
and acked, with no outcome (the spool never dispatched it, so it waits for none). A stale job
(its message since re-dispatched, held, deleted or done) is refused the same way, which also
spares a duplicate delivery.

The cost is one KV get per job (a direct get of one key, read-only for delivery).
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import ValidationError

from empath.core import errors, events, names, queue


def mismatch(job: events.DeliveryJob, entry: queue.Entry) -> str | None:
    """Why `job` is not the job the record `entry` was dispatched with, or None when it is."""
    if entry.state != queue.State.DELIVERING:
        return f"the message is {entry.state.value}, not delivering"
    if job.attempt != entry.attempts:
        return f"the job is for attempt {job.attempt}, the message is out on {entry.attempts}"
    if job.body_key != entry.body_key:
        return "the job names another body than its message's"
    expected = entry.envelope()
    if job.envelope.sender != expected.sender:
        return "the job's sender is not its message's"
    wanted = [r.address for r in expected.recipients]
    if sorted(r.address for r in job.envelope.recipients) != sorted(wanted):
        return "the job's recipients are not those its message has still to deliver"
    if job.envelope != expected:
        return "the job's envelope is not its message's"
    return None


async def refusal(kv: KeyValue, job: events.DeliveryJob) -> str | None:
    """Why the job must not be sent (read from its queue record), or None when it may.

    Raises `BusUnavailable` when the record cannot be read now: the job waits."""
    try:
        found = await kv.get(names.queue_key(job.id))
    except nats.js.errors.KeyNotFoundError:  # deleted or purged keys included
        return "the message is not in the queue"
    except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
        raise errors.BusUnavailable(f"cannot read the queue record: {error!r}") from error
    if not found.value:
        return "the message is not in the queue"
    try:
        entry = queue.Entry.model_validate_json(found.value)
    except ValidationError:
        return "its queue record does not load"
    return mismatch(job, entry)
