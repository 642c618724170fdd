"""What every consumer of an event does before its own work, written once.

A handler gets a JetStream message. Before anything else it decodes the event (an older
version upgraded, a newer one put back for later, an unknown older one refused for good),
binds a logger to the message's queue id, and opens a span joined to the trace the publisher
started, so one trace and one `grep <id>` follow a message across services. An error leaving
the handler names the queue id too, so the consume loop's "will retry"/"dropping" line says
which message it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from opentelemetry import trace

from empath.core import errors, events, logs, telemetry

E = TypeVar("E", bound=events.Model)


@dataclass(frozen=True, slots=True)
class Inbound(Generic[E]):
    """A decoded event and the logger that tags every line with its queue id."""

    event: E
    queue_id: str
    log: logs.MessageLogger


@contextlib.contextmanager
def receive(
    msg: Msg,
    model: type[E],
    *,
    log: logging.Logger,
    tracer: trace.Tracer,
    span: str,
) -> Iterator[Inbound[E]]:
    """Decode `msg` as `model` and handle it inside span `span` of the message's trace.

    Raises `BadEvent` (a `PermanentError`: the message is terminated) when the event cannot
    be read, `NewerEvent` (a `TemporaryError`: it is put back) when it is of a newer version.
    """
    event = events.decode(msg.data, model)
    queue_id = getattr(event, "id", None)
    if not isinstance(queue_id, str):
        raise errors.BadEvent(f"{model.__name__} event without a queue id")

    def attributes() -> dict[str, str | int]:
        found: dict[str, str | int] = {"empath.queue_id": queue_id}
        attempt = getattr(event, "attempt", None)
        if isinstance(attempt, int):
            found["empath.attempt"] = attempt
        return found

    with telemetry.span(tracer, span, parent=telemetry.extract(msg.headers), attributes=attributes):
        try:
            yield Inbound(event=event, queue_id=queue_id, log=logs.for_message(log, queue_id))
        except errors.EmpathError as error:
            if error.queue_id is None:
                error.queue_id = queue_id
            raise
        except Exception as error:
            error.add_note(f"queue id: {queue_id}")
            raise
