"""How the command-line clients fail: one line, and the exit code scripts rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from empath.control import ctl, transport

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
