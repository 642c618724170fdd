"""empathctl with kubectl's habits, against a running system: its own options after the
subcommand, times as ISO 8601, and shell completion."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import datetime, timedelta

import yaml

from tests.control_client import EMPATHCTL, TOKEN, empathctl, queue_some, url
from tests.system import System


async def test_the_programs_options_work_after_the_subcommand(control: System) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    listed = await asyncio.to_thread(
        empathctl, None, "queue", "list", "-o", "json", "--url", url(control), "--token", TOKEN
    )
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [queue_id]
    viewed = await asyncio.to_thread(
        empathctl, control, "queue", "view", queue_id, "--output=yaml", "--body"
    )
    assert viewed.returncode == 0, viewed.stderr
    assert yaml.safe_load(viewed.stdout)["item"]["id"] == queue_id


async def test_system_status_gives_start_times_in_iso_8601(control: System) -> None:
    as_json = await asyncio.to_thread(empathctl, control, "system", "status", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    instances = json.loads(as_json.stdout)["instances"]
    assert {i["service"] for i in instances} == {"ingress", "spool", "control"}
    for instance in instances:
        started = datetime.fromisoformat(instance["started"])
        assert started.tzinfo is not None
        assert started.utcoffset() == timedelta(0)
        assert abs((datetime.now(started.tzinfo) - started).total_seconds()) < 600
    shown = await asyncio.to_thread(empathctl, control, "system", "status")
    for instance in yaml.safe_load(shown.stdout)["instances"]:
        assert isinstance(instance["started"], str)
        datetime.fromisoformat(instance["started"])


async def test_bash_completion_completes_commands_and_options() -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {
            **os.environ,
            "_EMPATHCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        done = subprocess.run([EMPATHCTL], env=env, capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert await asyncio.to_thread(complete, "empathctl qu", 1) == ["queue"]
    assert await asyncio.to_thread(complete, "empathctl queue list --do", 3) == ["--domain"]
