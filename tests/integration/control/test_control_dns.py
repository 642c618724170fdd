"""DNS management through the control API, with delivery running against real DNS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.control_client import TOKEN, call
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.servers import free_port


async def test_the_shared_cache_can_be_listed_refreshed_and_cleared(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(
        only=("ingress", "spool", "delivery", "control"),
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
    )
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    cache = (await call(system, "GET", "/api/v1/dns/cache")).json()["items"]
    assert {"type": "MX", "name": "dest.test", "answer": [[10, "mx.dest.test"]]}.items() <= (
        next(i for i in cache if i["name"] == "dest.test").items()
    )
    assert dns.queries[("dest.test", "MX")] == 1

    refreshed = await call(system, "POST", "/api/v1/dns/refresh/dest.test")
    assert refreshed.json() == {"refreshed": "dest.test"}
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert dns.queries[("dest.test", "MX")] == 2  # looked up again, by the worker

    cleared = (await call(system, "DELETE", "/api/v1/dns/cache")).json()
    assert cleared["cleared"] >= 2
    assert (await call(system, "GET", "/api/v1/dns/cache")).json()["items"] == []


async def test_an_override_set_at_run_time_sends_mail_elsewhere(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, mx_port: int
) -> None:
    usual, elsewhere = await remote("127.0.0.2"), await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(
        only=("ingress", "spool", "delivery", "control"),
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
    )
    bad = await call(system, "PUT", "/api/v1/dns/overrides/dest.test", json={"target": "a b"})
    assert bad.status_code == 400
    set_ = await call(
        system, "PUT", "/api/v1/dns/overrides/dest.test", json={"target": f"127.0.0.3:{mx_port}"}
    )
    assert set_.json() == {"domain": "dest.test", "target": f"127.0.0.3:{mx_port}"}
    listed = (await call(system, "GET", "/api/v1/dns/overrides")).json()["items"]
    assert listed == [
        {"domain": "dest.test", "target": f"127.0.0.3:{mx_port}", "source": "runtime"}
    ]
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert (len(usual.arrived), len(elsewhere.arrived)) == (0, 1)

    assert (await call(system, "DELETE", "/api/v1/dns/overrides/dest.test")).status_code == 200
    assert (await call(system, "DELETE", "/api/v1/dns/overrides/dest.test")).status_code == 404
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert (len(usual.arrived), len(elsewhere.arrived)) == (1, 1)
