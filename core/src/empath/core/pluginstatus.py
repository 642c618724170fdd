"""How the validation plugins' calls went, as ingress publishes it and the control API tells it.

Ingress counts every call of every plugin (by outcome) and keeps the time of the last one
that gave a verdict and of the last that failed, with why. Each instance publishes its figures
with its heartbeat (`bus.Bus.heartbeat`, in `names.SERVICES_BUCKET`: no new bucket and no new
right), so they go when the instance goes. The control API adds the instances' figures up per
plugin and says what they mean (`summarize`): ready, failing (and why), idle or unknown. The
operator writes that into each MailPlugin's status; nobody calls a plugin to find out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# A failure's reason as published: enough to tell a timeout from a refused connection.
REASON_LENGTH = 300
# The most plugins one instance publishes (its settings bound them; this bounds a reader).
MOST = 256

Outcome = Literal["continue", "refuse", "timeout", "error"]
FAILURES = ("timeout", "error")
State = Literal["ready", "failing", "idle", "unknown"]


class Published(BaseModel):
    """One instance's figures for one plugin, in its heartbeat. Read tolerantly: a newer
    ingress may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(max_length=63)
    calls: dict[str, int] = Field(default_factory=dict, description="Calls by outcome.")
    last_success: datetime | None = Field(
        default=None, description="The last call that gave a verdict (continue or refuse)."
    )
    last_failure: datetime | None = Field(
        default=None, description="The last call that timed out or failed."
    )
    last_failure_reason: str | None = Field(default=None, max_length=REASON_LENGTH)


@dataclass(slots=True)
class Tally:
    """What one ingress instance knows of one plugin's calls (kept by the plugin runtime)."""

    name: str
    calls: dict[str, int] = field(default_factory=dict)
    last_success: float | None = None
    last_failure: float | None = None
    last_failure_reason: str | None = None

    def record(self, outcome: str, *, reason: str | None = None) -> None:
        self.calls[outcome] = self.calls.get(outcome, 0) + 1
        if outcome in FAILURES:
            self.last_failure = time.time()
            self.last_failure_reason = (reason or outcome)[:REASON_LENGTH]
        else:
            self.last_success = time.time()

    def published(self) -> dict[str, Any]:
        def at(moment: float | None) -> datetime | None:
            return None if moment is None else datetime.fromtimestamp(moment, UTC)

        return Published(
            name=self.name,
            calls=dict(self.calls),
            last_success=at(self.last_success),
            last_failure=at(self.last_failure),
            last_failure_reason=self.last_failure_reason,
        ).model_dump(mode="json")


class PluginStatus(BaseModel):
    """A plugin as the control API tells it: its figures over every ingress instance that
    runs, and what they mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hooks: list[str] = Field(default_factory=list, description="As the settings name them.")
    reached_by: str | None = Field(
        default=None,
        description="url, subject, module or library: how the services reach it; null for "
        "an event plugin, which reads its events itself.",
    )
    state: State = Field(
        description="ready: its last call gave a verdict; failing: its last call failed "
        "(`reason` says how); idle: not called since the instances started; unknown: no "
        "ingress instance reports it (none runs, or an event plugin, which ingress never calls)."
    )
    reason: str | None = None
    instances: int = Field(description="Ingress instances that report it.")
    calls: dict[str, int] = Field(description="Calls by outcome: continue, refuse, timeout, error.")
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_reason: str | None = None


class PluginsAnswer(BaseModel):
    """`GET /api/v1/plugins`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugins: list[PluginStatus]


def from_heartbeats(heartbeats: Iterable[Mapping[str, Any]]) -> dict[str, list[Published]]:
    """Each plugin's figures from each instance that publishes them; an entry that is not
    figures (a heartbeat of another service, or a broken one) is left out."""
    found: dict[str, list[Published]] = {}
    for beat in heartbeats:
        published = beat.get("plugins")
        if not isinstance(published, list):
            continue
        for item in published[:MOST]:
            try:
                figures = Published.model_validate(item)
            except ValidationError:
                continue
            found.setdefault(figures.name, []).append(figures)
    return found


def summarize(
    name: str,
    published: list[Published],
    *,
    hooks: list[str] | None = None,
    reached_by: str | None = None,
) -> PluginStatus:
    """One plugin's status from what every instance published for it."""
    calls: dict[str, int] = {}
    for figures in published:
        for outcome, count in figures.calls.items():
            calls[outcome] = calls.get(outcome, 0) + count
    successes = [f.last_success for f in published if f.last_success is not None]
    failures = [f for f in published if f.last_failure is not None]
    last_success = max(successes, default=None)
    latest = max(failures, key=lambda f: f.last_failure or datetime.min, default=None)
    last_failure = latest.last_failure if latest else None
    state: State
    reason: str | None = None
    if not published:
        state = "unknown"
        reason = "no ingress instance reports it" if reached_by else "an event plugin"
    elif last_success is None and last_failure is None:
        state = "idle"
    elif last_failure is not None and (last_success is None or last_failure > last_success):
        state = "failing"
        reason = latest.last_failure_reason if latest else None
    else:
        state = "ready"
    return PluginStatus(
        name=name,
        hooks=list(hooks or []),
        reached_by=reached_by,
        state=state,
        reason=reason,
        instances=len(published),
        calls=calls,
        last_success=last_success,
        last_failure=last_failure,
        last_failure_reason=latest.last_failure_reason if latest else None,
    )
