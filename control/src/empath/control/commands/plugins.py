"""`plugins`: how each plugin's calls went, as the ingress instances report them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from empath.control import output, transport
from empath.core import pluginstatus


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def plugins_table(data: Any) -> Table:
    answer = pluginstatus.PluginsAnswer.model_validate(data)
    table = Table("NAME", "STATE", "REACHED BY", "HOOKS", "CALLS", "LAST SUCCESS", "LAST FAILURE")
    for plugin in answer.plugins:
        counts = ", ".join(f"{outcome}={n}" for outcome, n in sorted(plugin.calls.items()))
        table.add_row(
            plugin.name,
            plugin.state + (f": {plugin.reason}" if plugin.reason else ""),
            plugin.reached_by or "-",
            ",".join(plugin.hooks),
            counts or "-",
            _when(plugin.last_success),
            _when(plugin.last_failure),
        )
    return table


def plugins(ctx: typer.Context) -> None:
    """How each plugin's calls went: ready, failing (and why), idle or unknown.

    Ready: its last call gave a verdict; failing: its last call failed; idle: not called yet;
    unknown: no ingress reports it. With the calls by outcome over every ingress instance,
    the last success and the last failure."""
    session = transport.session(ctx)
    output.show(session, session.call("GET", "/api/v1/plugins"), plugins_table)
