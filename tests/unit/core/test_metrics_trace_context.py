"""A message's trace context outlives its arrival: kept in the queue record, resumed when the
scheduler dispatches an attempt, carried to delivery in the job's headers."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from empath.core import queue, telemetry
from empath.spool import scheduler
from tests.unit.spool import samples

tracer = telemetry.tracer("tests")


def test_the_job_of_a_dispatched_attempt_carries_the_trace_of_the_messages_arrival() -> None:
    with tracer.start_as_current_span("spool.intake") as arrival:
        kept = telemetry.traceparent()
    assert kept is not None
    entry = samples.entry(traceparent=kept)
    with scheduler._in_trace(entry):
        headers = telemetry.inject({})
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    assert trace_id == f"{arrival.get_span_context().trace_id:032x}"
    # Nothing records spans here (no exporter): the dispatch makes none, its parent goes on.
    assert span_id == f"{arrival.get_span_context().span_id:016x}"


def test_with_an_exporter_the_dispatch_is_a_span_of_its_own_in_the_messages_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)  # as `telemetry.setup` makes it, with an exporter
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(scheduler, "_tracer", provider.get_tracer("tests"))
    with tracer.start_as_current_span("spool.intake") as arrival:
        entry = samples.entry(traceparent=telemetry.traceparent())
    with scheduler._in_trace(entry):
        headers = telemetry.inject({})
    [dispatch] = exporter.get_finished_spans()
    assert dispatch.name == "spool.dispatch"
    assert dispatch.context.trace_id == arrival.get_span_context().trace_id
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == arrival.get_span_context().span_id
    assert dict(dispatch.attributes or {}) == {
        "empath.queue_id": entry.id,
        "empath.attempt": entry.attempts,
    }
    assert headers["traceparent"].split("-")[2] == f"{dispatch.context.span_id:016x}"


def test_a_record_kept_before_trace_context_dispatches_in_a_trace_of_its_own() -> None:
    entry = samples.entry()
    assert entry.traceparent is None
    assert "traceparent" not in entry.model_dump_json()
    with scheduler._in_trace(entry):
        assert "traceparent" in telemetry.inject({})


def test_the_trace_context_survives_the_records_round_trip_through_kv() -> None:
    with tracer.start_as_current_span("spool.intake"):
        entry = samples.entry(traceparent=telemetry.traceparent())
    again = queue.Entry.model_validate_json(entry.model_dump_json())
    assert again.traceparent == entry.traceparent


def test_a_dispatch_on_arrival_stays_in_the_arrivals_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dispatched inside the arrival (the record's `traceparent` is the current context's),
    the dispatch is the same child of the arrival as one resumed from the record later."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(scheduler, "_tracer", provider.get_tracer("tests"))
    with provider.get_tracer("tests").start_as_current_span("spool.intake") as arrival:
        entry = samples.entry(traceparent=telemetry.traceparent())
        with scheduler._in_trace(entry):
            headers = telemetry.inject({})
    dispatch = next(s for s in exporter.get_finished_spans() if s.name == "spool.dispatch")
    assert dispatch.context.trace_id == arrival.get_span_context().trace_id
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == arrival.get_span_context().span_id
    assert headers["traceparent"].split("-")[2] == f"{dispatch.context.span_id:016x}"


def test_without_an_exporter_a_dispatch_on_arrival_carries_the_arrivals_trace_on() -> None:
    with tracer.start_as_current_span("spool.intake"):
        kept = telemetry.traceparent()
        entry = samples.entry(traceparent=kept)
        with scheduler._in_trace(entry):
            assert telemetry.inject({})["traceparent"] == kept
