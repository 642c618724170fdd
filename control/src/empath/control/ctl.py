"""`empathctl`: the queue, DNS, plugins and system commands, against the control API.

URL and token come from `--url`/`--token`, else `EMPATHCTL_URL`/`EMPATHCTL_TOKEN`, else the
config file (`--config`, default `~/.config/empath/empathctl.yaml` with `url:` and `token:`).
Tables for people by default, `-o json|yaml` for scripts; as in kubectl, the program's own
options may come before or after the command (`hoist`). Errors exit non-zero with one line
(the codes are in `transport`). `build` makes the program from the command groups and a
program's own options, which is how `kubectl empath` runs the same commands through the
Kubernetes API server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
import yaml

from empath.control import transport
from empath.control.commands import dns, plugins, queue, system

PROGRAM = "empathctl"
CONFIG = Path("~/.config/empath/empathctl.yaml")
OutputOption = Annotated[str, typer.Option("-o", "--output", help="table, json or yaml")]


def direct(session: transport.Session) -> transport.Target:
    """The control API at a URL, with a bearer token."""
    options = session.options
    config: dict[str, Any] = {}
    path = Path(options.get("config") or CONFIG).expanduser()
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise transport.Failed(f"{path}: {error}", transport.USAGE) from None
    url = options.get("url") or os.environ.get("EMPATHCTL_URL") or config.get("url")
    token = options.get("token") or os.environ.get("EMPATHCTL_TOKEN") or config.get("token")
    if not url:
        raise transport.Failed(
            "no API URL: use --url, EMPATHCTL_URL or the config file", transport.USAGE
        )
    if not token:
        raise transport.Failed(
            "no token: use --token, EMPATHCTL_TOKEN or the config file", transport.USAGE
        )
    return transport.Target(base_url=str(url), headers={"Authorization": f"Bearer {token}"})


def options(
    ctx: typer.Context,
    output: OutputOption = "table",
    url: Annotated[str | None, typer.Option(help="Control API URL.")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token.")] = None,
    config: Annotated[str | None, typer.Option(help="Config file.")] = None,
) -> None:
    ctx.obj = transport.Session.start(output, connect=direct, url=url, token=token, config=config)


def build(program: str, options: Callable[..., None]) -> typer.Typer:
    """The program: its own options (which make the session) and every command group."""
    app = typer.Typer(
        name=program,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        help="Manage an Empath mail system.",
    )
    app.callback()(options)
    app.add_typer(queue.app, name="queue")
    app.add_typer(system.app, name="system")
    app.add_typer(dns.app, name="dns")
    app.command("plugins")(plugins.plugins)
    return app


def hoist(params: Iterable[Any], args: list[str]) -> list[str]:
    """kubectl's habit: the program's own options (`params`: `-o`, `--url`, `-n`, ...) may
    come after the subcommand too; move them before it, where click looks for them. `--` ends
    the options."""
    takes_value: dict[str, bool] = {}
    for param in params:
        if param.param_type_name == "option" and not (param.name or "").endswith("_completion"):
            for name in (*param.opts, *param.secondary_opts):
                takes_value[name] = not param.is_flag
    hoisted: list[str] = []
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            rest += [word, *words]
            break
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
        if name not in takes_value:
            rest.append(word)
            continue
        attached = "=" in word if word.startswith("--") else len(word) > 2
        if not takes_value[name] or attached:
            hoisted.append(word)
            continue
        value = next(words, None)
        if value is None:  # left where it is: click says the value is missing
            rest.append(word)
        else:
            hoisted += [word, value]
    return hoisted + rest


def run(app: typer.Typer, program: str, args: list[str] | None = None) -> None:
    """Run the program; a failure is one line on stderr, after the program's name."""
    given = sys.argv[1:] if args is None else args
    try:
        app(prog_name=program, args=hoist(typer.main.get_command(app).params, given))
    except transport.Failed as failure:
        typer.echo(f"{program}: {failure.message}", err=True)
        sys.exit(failure.code)
    except Exception as error:  # a bug: say so in one line, and never exit 0
        typer.echo(f"{program}: internal error: {error!r}", err=True)
        sys.exit(transport.CRASHED)


def main() -> None:
    run(build(PROGRAM, options), PROGRAM)
