"""`empathctl`: the queue, DNS and system commands, against the control API.

URL and token come from `--url`/`--token`, else `EMPATHCTL_URL`/`EMPATHCTL_TOKEN`, else the
config file (`--config`, default `~/.config/empath/empathctl.yaml` with `url:` and `token:`).
Tables for people by default, `-o json|yaml` for scripts. Errors exit non-zero with one line:
1 when the API refused (its reason is printed), 2 for bad usage or configuration, 3 when the
API cannot be reached. The commands take their transport from a `Connector`, which is how
`kubectl empath` runs the same commands through the Kubernetes API server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

CONFIG = Path("~/.config/empath/empathctl.yaml")
OutputOption = Annotated[str, typer.Option("-o", "--output", help="table, json or yaml")]
PROGRAM = "empathctl"


@dataclass
class Target:
    """Where the API is and how to authenticate."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: Any = True
    cert: Any = None


Connector = Callable[["State"], Target]


@dataclass
class State:
    output: str = "table"
    options: dict[str, Any] = field(default_factory=dict)
    connector: Connector | None = None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.connector is not None
        target = self.connector(self)
        try:
            with httpx.Client(
                base_url=target.base_url.rstrip("/"),
                headers=target.headers,
                verify=target.verify,
                cert=target.cert,
                timeout=30,
            ) as client:
                response = client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            fail(f"cannot reach {target.base_url}: {error}", 3)
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text.strip() or response.reason_phrase
            fail(f"{response.status_code}: {reason}", 1)
        return response.json()


def fail(message: str, code: int) -> Any:
    typer.echo(f"{PROGRAM}: {message}", err=True)
    raise typer.Exit(code)


def direct(state: State) -> Target:
    """The control API at a URL, with a bearer token."""
    options = state.options
    config: dict[str, Any] = {}
    path = Path(options.get("config") or CONFIG).expanduser()
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            fail(f"{path}: {error}", 2)
    url = options.get("url") or os.environ.get("EMPATHCTL_URL") or config.get("url")
    token = options.get("token") or os.environ.get("EMPATHCTL_TOKEN") or config.get("token")
    if not url:
        fail("no API URL: use --url, EMPATHCTL_URL or the config file", 2)
    if not token:
        fail("no token: use --token, EMPATHCTL_TOKEN or the config file", 2)
    return Target(base_url=str(url), headers={"Authorization": f"Bearer {token}"})


# Piped output is read by scripts and greps: do not squeeze it into 80 columns.
console = Console(width=None if os.isatty(1) else 200)


def show(state: State, data: Any, table: Callable[[Any], Table] | None) -> None:
    if state.output == "json":
        typer.echo(json.dumps(data, indent=2))
    elif state.output == "yaml" or table is None:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        console.print(table(data))


def age(received: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(received)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def queue_table(data: Any) -> Table:
    table = Table("STATE", "AGE", "SIZE", "SENDER", "RECIPIENTS", "LAST REPLY")
    table.add_column("ID", no_wrap=True)
    table.columns.insert(0, table.columns.pop())
    for item in data["items"]:
        recipients = item["recipients"]
        shown = ", ".join(r["address"] for r in recipients[:2])
        if len(recipients) > 2:
            shown += f" +{len(recipients) - 2}"
        table.add_row(
            item["id"],
            item["state"],
            age(item["received_at"]),
            str(item["size"]),
            item["sender"] or "<>",
            shown,
            item.get("last_reply") or "",
        )
    if data.get("next_after"):
        table.caption = f"more: --after {data['next_after']}"
    return table


def entry_table(data: Any) -> Table:
    item = data["item"]
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
        table.add_row(name, str(item.get(name)))
    for r in item["recipients"]:
        table.add_row("recipient", f"{r['address']}  {r['status']}  {r.get('last_reply') or ''}")
    for attempt in item.get("history", []):
        for result in attempt["results"]:
            table.add_row(
                f"attempt {attempt['attempt']}",
                f"{result['address']}: {result['outcome']} via {result.get('remote')}"
                f" ({result.get('tls')}) {result['reply']}",
            )
    if "headers" in data:
        table.add_row("headers", data["headers"])
    if "body" in data:
        table.add_row("body", data["body"])
    return table


def stats_table(data: Any) -> Table:
    table = Table(
        "DOMAIN",
        "TOTAL",
        *data["buckets"],
        title=f"{data['waiting']} waiting, frozen: {data['frozen']}",
    )
    table.add_row("TOTAL", str(sum(data["ages"])), *map(str, data["ages"]))
    for domain, row in data["by_domain"].items():
        table.add_row(domain, str(row["total"]), *map(str, row["ages"]))
    states = ", ".join(f"{k}={v}" for k, v in data["by_state"].items())
    table.caption = states + (f"; oldest {data['oldest']['id']}" if data.get("oldest") else "")
    return table


def build(connector: Connector, name: str = "empathctl", *, kube: bool = False) -> typer.Typer:
    app = typer.Typer(
        name=name,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="Manage an Empath mail system.",
    )
    queue = typer.Typer(no_args_is_help=True, help="The mail queue.")
    system = typer.Typer(no_args_is_help=True, help="The system.")
    app.add_typer(queue, name="queue")
    app.add_typer(system, name="system")
    dns = typer.Typer(no_args_is_help=True, help="DNS cache and MX overrides.")
    app.add_typer(dns, name="dns")

    @dns.command("list-cache")
    def list_cache(ctx: typer.Context) -> None:
        """The DNS answers the delivery workers share."""
        show(ctx.obj, ctx.obj.call("GET", "/api/v1/dns/cache"), None)

    @dns.command("clear-cache")
    def clear_cache(ctx: typer.Context) -> None:
        """Forget every cached answer."""
        show(ctx.obj, ctx.obj.call("DELETE", "/api/v1/dns/cache"), None)

    @dns.command("refresh")
    def refresh(ctx: typer.Context, domain: str) -> None:
        """Forget the cached MX of a domain: the next delivery looks it up again."""
        show(ctx.obj, ctx.obj.call("POST", f"/api/v1/dns/refresh/{domain}"), None)

    @dns.command("list-overrides")
    def list_overrides(ctx: typer.Context) -> None:
        """MX overrides set at run time."""
        show(ctx.obj, ctx.obj.call("GET", "/api/v1/dns/overrides"), None)

    @dns.command("set-override")
    def set_override(ctx: typer.Context, domain: str, target: str) -> None:
        """Send a domain's mail to host[:port] instead of its MX."""
        show(
            ctx.obj,
            ctx.obj.call("PUT", f"/api/v1/dns/overrides/{domain}", json={"target": target}),
            None,
        )

    @dns.command("remove-override")
    def remove_override(ctx: typer.Context, domain: str) -> None:
        """Remove a run-time override."""
        show(ctx.obj, ctx.obj.call("DELETE", f"/api/v1/dns/overrides/{domain}"), None)

    def state(output: str, **options: Any) -> State:
        if output not in {"table", "json", "yaml"}:
            fail(f"unknown output {output!r}: use table, json or yaml", 2)
        return State(output=output, options=options, connector=connector)

    if kube:

        @app.callback()
        def kube_main(
            ctx: typer.Context,
            output: OutputOption = "table",
            context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
            namespace: Annotated[
                str | None, typer.Option("-n", "--namespace", help="The MailServer's namespace.")
            ] = None,
            mailserver: Annotated[
                str | None,
                typer.Option(help="The MailServer's name; default: the namespace's only one."),
            ] = None,
        ) -> None:
            ctx.obj = state(output, context=context, namespace=namespace, mailserver=mailserver)

    else:

        @app.callback()
        def main(
            ctx: typer.Context,
            output: OutputOption = "table",
            url: Annotated[str | None, typer.Option(help="Control API URL.")] = None,
            token: Annotated[str | None, typer.Option(help="Bearer token.")] = None,
            config: Annotated[str | None, typer.Option(help="Config file.")] = None,
        ) -> None:
            ctx.obj = state(output, url=url, token=token, config=config)

    @queue.command("list")
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
        show(ctx.obj, ctx.obj.call("GET", "/api/v1/queue", params=params), queue_table)

    @queue.command("view")
    def queue_view(
        ctx: typer.Context,
        message_id: str,
        body: Annotated[bool, typer.Option(help="Show the message.")] = False,
    ) -> None:
        """One message: envelope, recipients, attempts."""
        path = f"/api/v1/queue/{message_id}" + ("" if body else "/headers")
        params = {"body": "true"} if body else {}
        show(ctx.obj, ctx.obj.call("GET", path, params=params), entry_table)

    @queue.command("stats")
    def queue_stats(
        ctx: typer.Context,
        watch: Annotated[bool, typer.Option(help="Refresh every 2 s.")] = False,
    ) -> None:
        """Counts by state and domain, and ages (like qshape)."""
        if not watch:
            show(ctx.obj, ctx.obj.call("GET", "/api/v1/queue/stats"), stats_table)
            return
        from rich.live import Live

        with Live(stats_table(ctx.obj.call("GET", "/api/v1/queue/stats")), console=console) as live:
            try:
                while True:
                    time.sleep(2)
                    live.update(stats_table(ctx.obj.call("GET", "/api/v1/queue/stats")))
            except KeyboardInterrupt:
                pass

    @queue.command("retry")
    def queue_retry(
        ctx: typer.Context,
        message_id: Annotated[str | None, typer.Argument()] = None,
        domain: Annotated[str | None, typer.Option(help="All deferred to it.")] = None,
    ) -> None:
        """Try a message now, or every deferred message to a domain."""
        if (message_id is None) == (domain is None):
            fail("give a message id or --domain", 2)
        if domain:
            show(
                ctx.obj, ctx.obj.call("POST", "/api/v1/queue/retry", json={"domain": domain}), None
            )
        else:
            show(ctx.obj, ctx.obj.call("POST", f"/api/v1/queue/{message_id}/retry"), None)

    @queue.command("delete")
    def queue_delete(
        ctx: typer.Context,
        message_id: str,
        recipient: Annotated[
            list[str] | None, typer.Option(help="Only this recipient (repeatable).")
        ] = None,
    ) -> None:
        """Delete a message (no bounce is sent), or some of its recipients."""
        body = {"recipients": recipient} if recipient else {}
        show(ctx.obj, ctx.obj.call("DELETE", f"/api/v1/queue/{message_id}", json=body), None)

    def on_message(verb: str, text: str) -> Callable[..., None]:
        def action(ctx: typer.Context, message_id: str) -> None:
            show(ctx.obj, ctx.obj.call("POST", f"/api/v1/queue/{message_id}/{verb}"), None)

        action.__doc__ = text
        return action

    def on_queue(verb: str, text: str) -> Callable[..., None]:
        def action(ctx: typer.Context) -> None:
            show(ctx.obj, ctx.obj.call("POST", f"/api/v1/queue/{verb}"), None)

        action.__doc__ = text
        return action

    queue.command("hold")(on_message("hold", "Hold a message."))
    queue.command("release")(on_message("release", "Release a held message."))
    queue.command("freeze")(on_queue("freeze", "Freeze the queue: no new attempts."))
    queue.command("unfreeze")(on_queue("unfreeze", "Unfreeze the queue."))

    @system.command("ping")
    def ping(ctx: typer.Context) -> None:
        """Is the API there?"""
        show(ctx.obj, ctx.obj.call("GET", "/api/v1/system/ping"), None)

    @system.command("status")
    def status(ctx: typer.Context) -> None:
        """Version, uptime, health of each part, delivery workers, queue depth."""
        show(ctx.obj, ctx.obj.call("GET", "/api/v1/system/status"), None)

    return app


def main() -> None:
    build(direct)()
