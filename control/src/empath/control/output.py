"""How the command-line clients show an answer: a table for people, JSON or YAML for scripts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from empath.control import transport

# Piped output is read by scripts and greps: do not squeeze it into 80 columns. What is shown
# comes from the queue (senders, replies, headers anyone can write): text, never markup,
# emoji codes or highlighting.
console = Console(width=None if os.isatty(1) else 200, markup=False, emoji=False, highlight=False)

Tabulate = Callable[[Any], Table]


def call(ctx: typer.Context, method: str, path: str, **kwargs: Any) -> None:
    """Make one call of the API for a command and show its answer (most commands are this)."""
    session = transport.session(ctx)
    show(session, session.call(method, path, **kwargs))


def show(session: transport.Session, data: Any, table: Tabulate | None = None) -> None:
    """`data` in the session's format; YAML stands in for a table where there is none."""
    if session.output == "json":
        typer.echo(json.dumps(data, indent=2))
    elif session.output == "yaml" or table is None:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        console.print(table(data))


def age(received: datetime) -> str:
    """How long ago a time was, in its largest unit: 3d, 5h, 12m, 40s."""
    seconds = (datetime.now(UTC) - received).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
