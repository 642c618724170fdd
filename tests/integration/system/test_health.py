"""Probes: a service run as a container runs it (`empath <service>`) answers /livez and /readyz."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests import servers
from tests.servers import free_port, probe_ok

EMPATH = str(Path(sys.executable).parent / "empath")


async def test_a_service_answers_its_probes_and_is_unready_once_stopping(
    nats_url: str, s3_endpoint: str, bucket: str
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")},
        "EMPATH_NATS_URL": nats_url,
        "EMPATH_S3_ENDPOINT": s3_endpoint,
        "EMPATH_S3_ACCESS_KEY": servers.S3_ACCESS_KEY,
        "EMPATH_S3_SECRET_KEY": servers.S3_SECRET_KEY,
        "EMPATH_S3_BUCKET": bucket,
        "EMPATH_HEALTH_LISTEN": f"127.0.0.1:{port}",
        "EMPATH_SHUTDOWN_GRACE": "0",
    }
    process = await asyncio.to_thread(
        subprocess.Popen,
        [EMPATH, "delivery"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = await probe_ok(f"http://127.0.0.1:{port}/readyz", process)
        assert ready.text == "ready\n"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            live = await http.get("/livez")
            assert (live.status_code, live.text) == (200, "ok\n")
            assert (await http.get("/nothing")).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None
    assert "delivery ready" in process.stdout.read()


def test_a_wrong_health_listen_stops_the_service_naming_it() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")},
        "EMPATH_HEALTH_LISTEN": "everywhere",
    }
    result = subprocess.run(
        [EMPATH, "spool"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "EMPATH_HEALTH_LISTEN" in result.stderr
