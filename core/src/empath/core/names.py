"""Every NATS stream, subject, consumer and KV bucket name, in one module.

Services never spell a subject themselves; they import it from here, so renaming one is one
change and a reader can see the whole bus at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "empath"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A JetStream stream: its name, subjects and how long it keeps messages."""

    name: str
    subjects: tuple[str, ...]
    work_queue: bool = False
    max_age_seconds: float = 7 * 24 * 3600
    duplicate_window_seconds: float = 2 * 3600


# ingress -> spool: a message was accepted and its body is in the bucket.
RECEIVED_SUBJECT = f"{PREFIX}.received"
RECEIVED_STREAM = StreamSpec(name="EMPATH_RECEIVED", subjects=(RECEIVED_SUBJECT,))

# spool -> delivery: a message (some of its recipients) is due for an attempt. A work queue:
# each job is removed once a worker acks it.
JOBS_SUBJECT = f"{PREFIX}.delivery.jobs"
JOBS_STREAM = StreamSpec(name="EMPATH_JOBS", subjects=(JOBS_SUBJECT,), work_queue=True)

# delivery -> spool: the outcome of one attempt, per recipient.
ATTEMPTED_SUBJECT = f"{PREFIX}.delivery.attempted"
ATTEMPTED_STREAM = StreamSpec(name="EMPATH_ATTEMPTED", subjects=(ATTEMPTED_SUBJECT,))

# services -> event plugins: `empath.events.<event hook>` (`empath.core.plugins.Event`). Each
# event plugin reads it with a durable consumer of its own, named `plugin-<name>`.
PLUGIN_EVENTS_PREFIX = f"{PREFIX}.events"
PLUGIN_EVENTS_STREAM = StreamSpec(
    name="EMPATH_PLUGIN_EVENTS", subjects=(f"{PLUGIN_EVENTS_PREFIX}.>",)
)
PLUGIN_CONSUMER_PREFIX = "plugin-"

STREAMS: tuple[StreamSpec, ...] = (
    RECEIVED_STREAM,
    JOBS_STREAM,
    ATTEMPTED_STREAM,
    PLUGIN_EVENTS_STREAM,
)

# ingress -> validation plugins reached over NATS: request/reply on subjects under this prefix
# (a MailPlugin's `endpoint.subject`; the only ones ingress may request).
PLUGIN_REQUEST_PREFIX = f"{PREFIX}.plugins"

# Durable consumers.
SPOOL_RECEIVED_CONSUMER = "spool-received"
SPOOL_ATTEMPTED_CONSUMER = "spool-attempted"
DELIVERY_JOBS_CONSUMER = "delivery"  # one consumer shared by every delivery worker

# KV bucket holding the queue state, one key per message.
QUEUE_BUCKET = "empath_queue"
QUEUE_KEY_PREFIX = "msg."
# KV bucket holding queue-wide flags.
FLAGS_BUCKET = "empath_flags"
FROZEN_FLAG = "queue.frozen"
# Until when the spool still takes unsigned `received` events stored by JetStream before then
# (an ISO 8601 time; written once, when a spool first starts with signing: `signing.Window`).
UNSIGNED_UNTIL_FLAG = "signing.unsigned-until"
# KV bucket where every running service instance renews a heartbeat (entries expire).
SERVICES_BUCKET = "empath_services"
HEARTBEAT_TTL_SECONDS = 30.0
# KV bucket of MX overrides set at run time (key: the domain; value: host[:port]).
OVERRIDES_BUCKET = "empath_overrides"
# Delivery workers drop cached DNS answers for the domain published here ("*" for all).
DNS_INVALIDATE_SUBJECT = f"{PREFIX}.dns.invalidate"
# KV bucket of the DNS cache shared by every delivery worker (key: mx.<domain>).
DNS_BUCKET = "empath_dns"

# KV bucket of the limits every delivery worker shares: leased session slots (`slots.<domain>`),
# rate reservations (`rate.<domain>`) and circuit breakers (`circuit.<domain>`).
LIMITS_BUCKET = "empath_limits"
# Records nobody rewrites this long are dropped (the longest cool-down must be shorter).
LIMITS_TTL_SECONDS = 2 * 24 * 3600.0
CIRCUIT_KEY_PREFIX = "circuit."

# Request/reply API of the spool (the control service is its client).
QUERY_LIST_SUBJECT = f"{PREFIX}.api.queue.list"
QUERY_GET_SUBJECT = f"{PREFIX}.api.queue.get"
QUERY_COUNTS_SUBJECT = f"{PREFIX}.api.queue.counts"
QUERY_STATS_SUBJECT = f"{PREFIX}.api.queue.stats"
QUERY_RETRY_SUBJECT = f"{PREFIX}.api.queue.retry"
QUERY_DELETE_SUBJECT = f"{PREFIX}.api.queue.delete"
QUERY_HOLD_SUBJECT = f"{PREFIX}.api.queue.hold"
QUERY_RELEASE_SUBJECT = f"{PREFIX}.api.queue.release"
QUERY_FREEZE_SUBJECT = f"{PREFIX}.api.queue.freeze"
QUERY_UNFREEZE_SUBJECT = f"{PREFIX}.api.queue.unfreeze"
QUERY_QUEUE_GROUP = "spool"


def queue_key(message_id: str) -> str:
    """The KV key of one message's queue state."""
    return f"{QUEUE_KEY_PREFIX}{message_id}"


def plugin_event_subject(event: str) -> str:
    """The subject an event hook's events are published on."""
    return f"{PLUGIN_EVENTS_PREFIX}.{event}"


def plugin_consumer(plugin: str) -> str:
    """The durable consumer of an event plugin on `PLUGIN_EVENTS_STREAM`."""
    return f"{PLUGIN_CONSUMER_PREFIX}{plugin}"
