"""Every consumer decodes its event, logs with the queue id and joins the message's trace."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from empath.core import consumers, errors, events, telemetry

log = logging.getLogger("empath.tests.consumers")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
JOB_V1 = {
    "kind": "delivery-job",
    "version": 1,
    "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "attempt": 3,
    "body_key": "k",
    "size": 1,
    "sender": "a@example.org",
    "recipients": [{"address": "u@example.com"}],
}


def message(body: dict[str, Any] | bytes) -> Msg:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"traceparent": TRACEPARENT}
    return Msg(_client=None, subject="empath.jobs", data=data, headers=headers)  # type: ignore[arg-type]


def tracer_of(exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests")


def test_an_event_is_handled_in_a_span_of_the_publishers_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    with (
        caplog.at_level(logging.INFO, logger=log.name),
        consumers.receive(
            message(JOB_V1),
            events.DeliveryJob,
            log=log,
            tracer=tracer_of(exporter),
            span="delivery.attempt",
        ) as inbound,
    ):
        inbound.log.info("to=<%s> delivered", inbound.event.envelope.recipients[0].address)
    assert inbound.event.envelope.sender == "a@example.org"  # a v1 job, read as v2
    assert [(r.getMessage(), r.__dict__.get("queue_id")) for r in caplog.records] == [
        ("to=<u@example.com> delivered", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    ]
    [span] = exporter.get_finished_spans()
    assert span.name == "delivery.attempt"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert dict(span.attributes or {}) == {
        "empath.queue_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "empath.attempt": 3,
    }


def test_an_error_of_the_handler_names_the_message_it_is_about() -> None:
    with (
        pytest.raises(errors.TemporaryError) as raised,
        consumers.receive(
            message(JOB_V1),
            events.DeliveryJob,
            log=log,
            tracer=tracer_of(InMemorySpanExporter()),
            span="delivery.attempt",
        ),
    ):
        raise errors.BusUnavailable("publish to empath.attempted failed")
    assert raised.value.queue_id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (b'{"kind": "delivery-job", "version": 0}', errors.BadEvent),
        (b'{"kind": "delivery-job", "version": 99}', errors.NewerEvent),
    ],
)
def test_an_unreadable_event_is_refused_before_the_handler_runs(
    data: bytes, refusal: type[errors.EmpathError]
) -> None:
    exporter = InMemorySpanExporter()
    with (
        pytest.raises(refusal),
        consumers.receive(
            message(data),
            events.DeliveryJob,
            log=log,
            tracer=tracer_of(exporter),
            span="delivery.attempt",
        ),
    ):
        pytest.fail("the handler ran")
    assert exporter.get_finished_spans() == ()


def test_with_no_exporter_the_handler_runs_in_the_publishers_trace_without_a_span_of_its_own() -> (
    None
):
    quiet = telemetry.tracer("tests.quiet")  # the provider `empath` installs with no exporter
    with consumers.receive(
        message(JOB_V1), events.DeliveryJob, log=log, tracer=quiet, span="delivery.attempt"
    ):
        passed_on = telemetry.inject({})
    assert passed_on["traceparent"] == TRACEPARENT
    assert "traceparent" not in telemetry.inject({})  # and only inside the handler
