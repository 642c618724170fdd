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

The cost is one round trip per job: the JetStream API's get of the last message of the
record's key (what the NATS permissions let delivery do with the queue bucket, and nothing
more), parsed here (`Records`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import DEFAULT_PREFIX
from pydantic import ValidationError

from empath.core import errors, events, names, queue

# What a KV key may be (as nats-py checks it): no wildcard, no space, nothing to escape.
_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
# JetStream's error code for "no message found" (JSNoMessageFoundErr).
NO_MESSAGE_FOUND = 10037


class Records:
    """The queue records, read one by key with a JetStream API request of their own.

    nats-py's `KeyValue.get` sends the same request, then parses the stored headers with the
    `email` package and builds its objects: a fifth of delivery's record check. A deleted or
    purged record has no value, so only the value is read here."""

    def __init__(self, nc: NATS, *, timeout: float, bucket: str = names.QUEUE_BUCKET) -> None:
        self.nc = nc
        self.timeout = timeout
        self.api = f"{DEFAULT_PREFIX}.STREAM.MSG.GET.KV_{bucket}"
        self.prefix = f"$KV.{bucket}."

    async def get(self, key: str) -> bytes | None:
        """The record's value: None when the key has none (never written, deleted, purged,
        or no key at all). Raises `nats.errors.Error` when NATS does not answer."""
        if not _KEY.match(key):
            return None
        subject = self.prefix + key
        request = json.dumps({"last_by_subj": subject}).encode()
        reply = await self.nc.request(self.api, request, timeout=self.timeout)
        answer = json.loads(reply.data)
        if "error" in answer:
            if answer["error"].get("err_code") == NO_MESSAGE_FOUND:
                return None  # a missing stream, say, is no answer: the job waits
            raise nats.js.errors.Error(f"cannot get the record: {answer['error']}")
        message = answer.get("message") or {}
        if message.get("subject") != subject:
            return None
        try:
            return base64.b64decode(message.get("data") or "", validate=True) or None
        except binascii.Error as error:
            raise nats.js.errors.Error(f"a record that is not base64: {error}") from error


def mismatch(job: events.DeliveryJob, entry: queue.Entry) -> str | None:
    """Why `job` is not the job the record `entry` was dispatched with, or None when it is."""
    if entry.state != queue.State.DELIVERING:
        return f"the message is {entry.state.value}, not delivering"
    if job.attempt != entry.attempts:
        return f"the job is for attempt {job.attempt}, the message is out on {entry.attempts}"
    if job.body_key != entry.body_key:
        return "the job names another body than its message's"
    if job.body is not None and len(job.body) != entry.size:
        # The body a job carries is the message's (its `received` event's): of its size.
        return "the job's body is not its message's size"
    envelope = job.envelope
    if envelope.sender != entry.sender:
        return "the job's sender is not its message's"
    wanted = [r.address for r in entry.open_recipients]
    if sorted(r.address for r in envelope.recipients) != sorted(wanted):
        return "the job's recipients are not those its message has still to deliver"
    if not entry.has_envelope(envelope):
        return "the job's envelope is not its message's"
    return None


async def refusal(records: Records, job: events.DeliveryJob) -> str | None:
    """Why the job must not be sent (read from its queue record), or None when it may.

    Raises `BusUnavailable` when the record cannot be read now: the job waits."""
    try:
        found = await records.get(names.queue_key(job.id))
    except (nats.errors.Error, nats.js.errors.Error, OSError, ValueError) as error:
        raise errors.BusUnavailable(f"cannot read the queue record: {error!r}") from error
    if not found:  # deleted or purged records included
        return "the message is not in the queue"
    try:
        entry = queue.Entry.model_validate_json(found)
    except ValidationError:
        return "its queue record does not load"
    return mismatch(job, entry)
