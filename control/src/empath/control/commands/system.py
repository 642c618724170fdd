"""`system`: is the API there, and how is every part of the system."""

from __future__ import annotations

import typer

from empath.control import output

app = typer.Typer(no_args_is_help=True, help="The system.")


@app.command("ping")
def ping(ctx: typer.Context) -> None:
    """Is the API there?"""
    output.call(ctx, "GET", "/api/v1/system/ping")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Version, uptime, health of each part, queue depth and oldest, and the last 15 minutes:
    received and delivered per minute, recipients by outcome, failure ratio by domain."""
    output.call(ctx, "GET", "/api/v1/system/status")
