"""`dns`: the DNS cache the delivery workers share, and MX overrides set at run time."""

from __future__ import annotations

import typer

from empath.control import output

app = typer.Typer(no_args_is_help=True, help="DNS cache and MX overrides.")


@app.command("list-cache")
def list_cache(ctx: typer.Context) -> None:
    """The DNS answers the delivery workers share."""
    output.call(ctx, "GET", "/api/v1/dns/cache")


@app.command("clear-cache")
def clear_cache(ctx: typer.Context) -> None:
    """Forget every cached answer."""
    output.call(ctx, "DELETE", "/api/v1/dns/cache")


@app.command("refresh")
def refresh(ctx: typer.Context, domain: str) -> None:
    """Forget the cached MX of a domain: the next delivery looks it up again."""
    output.call(ctx, "POST", f"/api/v1/dns/refresh/{domain}")


@app.command("list-overrides")
def list_overrides(ctx: typer.Context) -> None:
    """MX overrides set at run time."""
    output.call(ctx, "GET", "/api/v1/dns/overrides")


@app.command("set-override")
def set_override(ctx: typer.Context, domain: str, target: str) -> None:
    """Send a domain's mail to host[:port] instead of its MX."""
    output.call(ctx, "PUT", f"/api/v1/dns/overrides/{domain}", json={"target": target})


@app.command("remove-override")
def remove_override(ctx: typer.Context, domain: str) -> None:
    """Remove a run-time override."""
    output.call(ctx, "DELETE", f"/api/v1/dns/overrides/{domain}")
