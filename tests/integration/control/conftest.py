"""Fixtures of the control tests: a system with the control API and a known token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.control_client import TOKEN
from tests.servers import free_port
from tests.system import StartSystem, System


@pytest.fixture
async def control(start_system: StartSystem, tmp_path: Path) -> System:
    return await start_system(
        only=("ingress", "spool", "control"),
        frozen=True,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
        control_audit_file=tmp_path / "audit.log",
    )
