"""`queue`: list, view, stats, retry, delete, hold, release, freeze and unfreeze."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from empath.control import output, transport
from empath.core import queries

app = typer.Typer(no_args_is_help=True, help="The mail queue.")

WATCH_SECONDS = 2.0


def queue_table(data: Any) -> Table:
    page = queries.ListAnswer.model_validate(data)
    table = Table("STATE", "AGE", "SIZE", "SENDER", "RECIPIENTS", "LAST REPLY")
    table.add_column("ID", no_wrap=True)
    table.columns.insert(0, table.columns.pop())
    for item in page.items:
        left_out = page.omitted.get(item.id)
        total = len(item.recipients) + (left_out.recipients if left_out else 0)
        shown = ", ".join(r.address for r in item.recipients[:2])
        if total > 2:
            shown += f" +{total - 2}"
        table.add_row(
            item.id,
            item.state,
            output.age(item.received_at),
            str(item.size),
            item.sender or "<>",
            shown,
            item.last_reply or "",
        )
    if page.next_after:
        table.caption = f"more: --after {page.next_after}"
    return table


def entry_table(data: Any) -> Table:
    """A message's record (`GetAnswer`), and its header section and text when `data` has them."""
    answer = queries.GetAnswer.model_validate(data)
    item = answer.item
    fields = item.model_dump(mode="json")  # as the JSON output spells them
    table = Table("FIELD", "VALUE", show_header=False)
    for name in (
        "id",
        "state",
        "sender",
        "size",
        "received_at",
        "attempts",
        "next_attempt",
        "last_reply",
        "held",
    ):
        table.add_row(name, str(fields[name]))
    for key, value in sorted(item.metadata.items()):
        table.add_row("metadata", f"{key}={value}")
    for r in item.recipients:
        table.add_row("recipient", f"{r.address}  {r.status}  {r.last_reply or ''}")
    for attempt in item.history:
        for result in attempt.results:
            table.add_row(
                f"attempt {attempt.attempt}",
                f"{result.address}: {result.outcome} via {result.remote}"
                f" ({result.tls}) {result.reply}",
            )
    if answer.omitted:
        table.add_row(
            "omitted",
            f"{answer.omitted.recipients} recipients, {answer.omitted.history} attempts "
            "(too large for one answer)",
        )
    if "headers" in data:
        table.add_row("headers", data["headers"])
    if "body" in data:
        table.add_row("body", data["body"])
    if data.get("body_gone"):
        table.add_row("body", "no longer in the bucket (the message is finished)")
    return table


def stats_table(data: Any) -> Table:
    stats = queries.StatsAnswer.model_validate(data)
    table = Table(
        "DOMAIN",
        "TOTAL",
        *stats.buckets,
        title=f"{stats.waiting} waiting, frozen: {stats.frozen}",
    )
    table.add_row("TOTAL", str(sum(stats.ages)), *map(str, stats.ages))
    for domain, row in stats.by_domain.items():
        table.add_row(domain, str(row.total), *map(str, row.ages))
    states = ", ".join(f"{k}={v}" for k, v in stats.by_state.items())
    table.caption = states + (f"; oldest {stats.oldest.id}" if stats.oldest else "")
    if stats.domains_omitted:
        table.caption += f"; {stats.domains_omitted} less busy domains not shown"
    for circuit in stats.circuits:
        until = circuit.until
        when = "probe due" if until <= datetime.now(UTC) else f"until {until:%H:%M:%S} UTC"
        if circuit.state == "half-open":
            when = "probing"
        table.caption += (
            f"\ncircuit {circuit.state}: {circuit.domain} ({when}, {circuit.failures} failed "
            f"connections): {circuit.reason}"
        )
    return table


@app.command("list")
def queue_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="queued, deferred, ...")] = None,
    domain: Annotated[str | None, typer.Option(help="Recipient domain.")] = None,
    sender: Annotated[str | None, typer.Option(help="Part of the sender.")] = None,
    min_age: Annotated[float | None, typer.Option(help="At least this old (seconds).")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 100,
    after: Annotated[str | None, typer.Option(help="Page on after this id.")] = None,
    newest: Annotated[bool, typer.Option(help="Newest first.")] = False,
) -> None:
    """List messages, oldest first."""
    session = transport.session(ctx)
    params: dict[str, Any] = {"limit": limit, "sort": "-age" if newest else "age"}
    for key, value in (
        ("state", state),
        ("domain", domain),
        ("sender", sender),
        ("min_age", min_age),
        ("after", after),
    ):
        if value is not None:
            params[key] = value
    output.show(session, session.call("GET", "/api/v1/queue", params=params), queue_table)


@app.command("view")
def queue_view(
    ctx: typer.Context,
    message_id: str,
    body: Annotated[bool, typer.Option(help="Show the message.")] = False,
) -> None:
    """One message: envelope, recipients, attempts."""
    session = transport.session(ctx)
    path = f"/api/v1/queue/{message_id}" + ("" if body else "/headers")
    params = {"body": "true"} if body else {}
    output.show(session, session.call("GET", path, params=params), entry_table)


@app.command("stats")
def queue_stats(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option(help="Refresh every 2 s.")] = False,
) -> None:
    """Counts by state and domain, and ages (like qshape)."""
    session = transport.session(ctx)
    if not watch:
        output.show(session, session.call("GET", "/api/v1/queue/stats"), stats_table)
        return
    frame = stats_table(session.call("GET", "/api/v1/queue/stats"))
    with Live(frame, console=output.console) as live:
        try:
            while True:
                time.sleep(WATCH_SECONDS)
                live.update(stats_table(session.call("GET", "/api/v1/queue/stats")))
        except KeyboardInterrupt:
            pass


@app.command("retry")
def queue_retry(
    ctx: typer.Context,
    message_id: Annotated[str | None, typer.Argument()] = None,
    domain: Annotated[str | None, typer.Option(help="All deferred to it.")] = None,
) -> None:
    """Try a message now, or every deferred message to a domain."""
    if (message_id is None) == (domain is None):
        raise transport.Failed("give a message id or --domain", transport.USAGE)
    if domain:
        output.call(ctx, "POST", "/api/v1/queue/retry", json={"domain": domain})
    else:
        output.call(ctx, "POST", f"/api/v1/queue/{message_id}/retry")


@app.command("delete")
def queue_delete(
    ctx: typer.Context,
    message_id: str,
    recipient: Annotated[
        list[str] | None, typer.Option(help="Only this recipient (repeatable).")
    ] = None,
) -> None:
    """Delete a message (no bounce is sent), or some of its recipients."""
    body = {"recipients": recipient} if recipient else {}
    output.call(ctx, "DELETE", f"/api/v1/queue/{message_id}", json=body)


def _on_message(verb: str, text: str) -> Callable[..., None]:
    def action(ctx: typer.Context, message_id: str) -> None:
        output.call(ctx, "POST", f"/api/v1/queue/{message_id}/{verb}")

    action.__doc__ = text
    return action


def _on_queue(verb: str, text: str) -> Callable[..., None]:
    def action(ctx: typer.Context) -> None:
        output.call(ctx, "POST", f"/api/v1/queue/{verb}")

    action.__doc__ = text
    return action


app.command("hold")(_on_message("hold", "Hold a message."))
app.command("release")(_on_message("release", "Release a held message."))
app.command("freeze")(_on_queue("freeze", "Freeze the queue: no new attempts."))
app.command("unfreeze")(_on_queue("unfreeze", "Unfreeze the queue."))
