"""Logging: `empath.<service>` loggers, JSON lines in production, readable text locally.

Every record about a message carries its queue id (`for_message`), in the JSON as `queue_id`
and in text as a `[id]` prefix, so `grep <id>` over all services tells a message's story. A JSON
line written inside a span also carries its `trace_id` and `span_id` (hex, as trace back ends
show them), so a log line leads to its trace and a trace to its lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# What a peer could use to forge log lines or drive a terminal (CR, LF, ESC, C1, bad bytes).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with any `extra=` fields kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message is escaped (JSON lines are escaped by JSON): one record, one line.
        record.message = _UNSAFE.sub(_escaped, record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        queue_id = getattr(record, "queue_id", None)
        if queue_id:
            head, sep, tail = text.partition(": ")
            text = f"{head}: [{queue_id}] {tail}" if sep else text
        return text


def setup(*, fmt: str = "text", level: str = "INFO") -> None:
    """Configure the `empath` loggers once per process (library loggers stay at WARNING)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("empath").setLevel(level)


class MessageLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one queue id (kopf's object-aware adapter, for messages)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def for_message(logger: logging.Logger, queue_id: str) -> MessageLogger:
    return MessageLogger(logger, {"queue_id": queue_id})
