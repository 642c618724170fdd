"""How the command-line clients fail: one line, and the exit code scripts rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from empath.control import ctl, output, transport
from empath.control.commands import queue

EMPATHCTL = str(Path(sys.executable).parent / "empathctl")


def test_an_unknown_output_format_is_bad_usage() -> None:
    with pytest.raises(transport.Failed) as failed:
        transport.Session.start("xml", connect=ctl.direct)
    assert (failed.value.message, failed.value.code) == (
        "unknown output 'xml': use table, json or yaml",
        transport.USAGE,
    )


def test_without_a_url_there_is_nothing_to_connect_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMPATHCTL_URL", raising=False)
    session = transport.Session.start("json", connect=ctl.direct, config="/nonexistent")
    with pytest.raises(transport.Failed) as failed:
        session.call("GET", "/api/v1/system/ping")
    assert failed.value.code == transport.USAGE
    assert "no API URL" in failed.value.message


def test_a_failure_is_one_line_after_the_programs_name() -> None:
    done = subprocess.run(
        [EMPATHCTL, "queue", "retry"],
        env={"HOME": "/nonexistent", "EMPATHCTL_URL": "http://127.0.0.1:1", "EMPATHCTL_TOKEN": "t"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (2, "empathctl: give a message id or --domain\n")


def test_a_command_that_crashes_says_so_in_one_line_and_never_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def options(ctx: typer.Context) -> None:
        ctx.obj = transport.Session.start("table", connect=ctl.direct)

    app = ctl.build("empathctl", options)
    broken = typer.Typer()

    @broken.command("now")
    def now() -> None:
        raise RuntimeError("a bug")

    app.add_typer(broken, name="crash")
    with pytest.raises(SystemExit) as exited:
        ctl.run(app, "empathctl", ["crash", "now"])
    assert exited.value.code == transport.CRASHED
    assert capsys.readouterr().err == "empathctl: internal error: RuntimeError('a bug')\n"


def test_the_table_console_prints_markup_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    session = transport.Session.start("table", connect=ctl.direct)
    data = {"items": [], "next_after": "[/bold] [red]:smile:"}
    output.show(session, data, queue.queue_table)
    assert "more: --after [/bold] [red]:smile:" in capsys.readouterr().out
