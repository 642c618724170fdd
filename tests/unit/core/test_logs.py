"""Logs: JSON lines in production, text locally; a message's records carry its queue id."""

from __future__ import annotations

import json
import logging

import pytest

from empath.core import logs, telemetry


def test_json_lines_carry_the_queue_id(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(fmt="json", level="INFO")
    try:
        logs.for_message(
            logging.getLogger("empath.ingress.test"), "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        ).info("queued from=<%s>", "a@example.org")
        logging.getLogger("empath.ingress.test").debug("not at INFO")
    finally:
        logs.setup(fmt="text", level="INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["msg"] == "queued from=<a@example.org>"
    assert record["queue_id"] == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert record["logger"] == "empath.ingress.test"
    assert record["level"] == "info"


def test_text_lines_show_the_queue_id(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(fmt="text", level="INFO")
    logs.for_message(logging.getLogger("empath.spool.test"), "ID1").warning("body missing")
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING empath.spool.test: [ID1] body missing")


def test_json_lines_written_in_a_span_carry_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("empath.delivery.test")
    logs.setup(fmt="json", level="INFO")
    try:
        with telemetry.tracer("tests").start_as_current_span("attempt") as span:
            log.info("inside")
        log.info("outside")
    finally:
        logs.setup(fmt="text", level="INFO")
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert context.is_valid
    assert "trace_id" not in outside
    assert "span_id" not in outside
