"""What this process's metrics say, read back as a scraper reads them from `/metrics`."""

from __future__ import annotations

from prometheus_client import parser

from empath.core import telemetry


def scraped(name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    text = telemetry.prometheus_text()[0].decode()
    return sum(
        sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
