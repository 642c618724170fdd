"""A message's trace context outlives its arrival: kept in the queue record, resumed when the
scheduler dispatches an attempt, carried to delivery in the job's headers."""

from __future__ import annotations

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
    assert span_id != f"{arrival.get_span_context().span_id:016x}"


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
