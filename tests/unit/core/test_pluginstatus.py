"""What the instances' published figures of a plugin add up to, and what they are read as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from empath.core import pluginstatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def beat(*figures: dict[str, Any], service: str = "ingress") -> dict[str, Any]:
    return {"service": service, "instance": "h:1", "started": 0, "plugins": list(figures)}


def published(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


def test_the_instances_figures_add_up_and_the_latest_failure_tells_why() -> None:
    found = pluginstatus.from_heartbeats(
        [
            beat(
                published(
                    "policy",
                    calls={"continue": 5, "timeout": 1},
                    last_success=(T0 + timedelta(seconds=10)).isoformat(),
                    last_failure=T0.isoformat(),
                    last_failure_reason="at rcpt: no verdict within 5 s",
                )
            ),
            beat(
                published(
                    "policy",
                    calls={"continue": 2, "error": 1},
                    last_success=T0.isoformat(),
                    last_failure=(T0 + timedelta(seconds=20)).isoformat(),
                    last_failure_reason="at rcpt: PluginError: HTTP 500",
                )
            ),
        ]
    )
    status = pluginstatus.summarize("policy", found["policy"], hooks=["rcpt"], reached_by="url")
    assert status.calls == {"continue": 7, "timeout": 1, "error": 1}
    assert status.instances == 2
    assert status.state == "failing"
    assert status.reason == "at rcpt: PluginError: HTTP 500"
    assert status.last_success == T0 + timedelta(seconds=10)
    assert status.last_failure == T0 + timedelta(seconds=20)


def test_a_success_after_the_last_failure_is_ready_and_still_says_the_failure() -> None:
    figures = pluginstatus.Published(
        name="p",
        calls={"error": 1, "refuse": 1},
        last_success=T0 + timedelta(seconds=1),
        last_failure=T0,
        last_failure_reason="at mail: boom",
    )
    status = pluginstatus.summarize("p", [figures], reached_by="module")
    assert (status.state, status.reason) == ("ready", None)
    assert status.last_failure_reason == "at mail: boom"


def test_no_calls_is_idle_and_no_instance_is_unknown() -> None:
    assert pluginstatus.summarize("p", [pluginstatus.Published(name="p")]).state == "idle"
    nobody = pluginstatus.summarize("p", [], reached_by="subject")
    assert (nobody.state, nobody.reason) == ("unknown", "no ingress instance reports it")
    assert pluginstatus.summarize("audit", []).reason == "an event plugin"


def test_what_is_not_figures_is_left_out() -> None:
    found = pluginstatus.from_heartbeats(
        [
            {"service": "spool", "instance": "h:2", "started": 0},
            beat({"name": "x" * 100}),
            beat("not an object", {"calls": {}}),
            {"service": "ingress", "plugins": "nope"},
            beat(published("ok", calls={"continue": 1}, extra="a newer ingress's field")),
        ]
    )
    assert list(found) == ["ok"]


def test_a_tally_records_outcomes_and_bounds_the_reason() -> None:
    tally = pluginstatus.Tally("p")
    tally.record("continue")
    tally.record("timeout", reason="x" * 1000)
    figures = pluginstatus.Published.model_validate(tally.published())
    assert figures.calls == {"continue": 1, "timeout": 1}
    assert figures.last_failure_reason == "x" * pluginstatus.REASON_LENGTH
    assert figures.last_success is not None
    assert figures.last_failure is not None
    assert figures.last_failure >= figures.last_success
