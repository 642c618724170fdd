"""TLS to the object store: an `https` endpoint signed by a private CA (`EMPATH_S3_TLS_CA`).

SeaweedFS serves S3 over HTTPS with a certificate from a trustme CA. A message goes in, is
stored, read back by delivery (nothing inline: the body travels only through the store) and
reaches the remote MX; and a store whose certificate the services do not trust gets no body:
the SMTP client hears 451 and nothing is kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from empath.core import errors, settings, store, up
from tests import servers
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx, send, settle
from tests.system import StartSystem
from tests.waiting import eventually
from tests.wire import Wire


def issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path, Path]:
    """The CA's certificate, and a server certificate and key for 127.0.0.1 it signed."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert("127.0.0.1")
    paths = (directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    ca.cert_pem.write_to_path(str(paths[0]))
    leaf.cert_chain_pems[0].write_to_path(str(paths[1]))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths


@dataclass
class TlsStore:
    """SeaweedFS serving S3 over HTTPS on one port, which a test may restart with another
    certificate (same port, same data)."""

    directory: Path
    port: int = field(default_factory=servers.free_port)
    _running: contextlib.ExitStack | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, cert: Path, key: Path) -> None:
        argv = up.weed_argv(
            host="127.0.0.1",
            s3_port=self.port,
            data_dir=self.directory / "data",
            bucket=None,
            extra=(f"-s3.cert.file={cert}", f"-s3.key.file={key}", "-master.volumeSizeLimitMB=64"),
        )
        env = {**os.environ, **up.s3_credentials_env(servers.S3_ACCESS_KEY, servers.S3_SECRET_KEY)}
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        stack.enter_context(servers.running(argv, self.port, self.directory / "weed.log", env))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The private CA's bundle, and the store's certificate and key it signed."""
    return issue(trustme.CA(), tmp_path / "pki", "store")


@pytest.fixture
def tls_store(tmp_path: Path, private_ca: tuple[Path, Path, Path]) -> Iterator[TlsStore]:
    server = TlsStore(tmp_path / "weed-tls")
    server.start(private_ca[1], private_ca[2])
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


async def test_a_message_is_relayed_through_a_store_served_over_tls_by_a_private_ca(
    relay: Callable[..., Any],
    remote: Callable[..., Any],
    dns: DnsServer,
    tls_store: TlsStore,
    private_ca: tuple[Path, Path, Path],
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    over_tls = {"s3_endpoint": tls_store.endpoint, "s3_tls_ca": private_ca[0]}
    # Nothing travels inline with the events: delivery reads the body from the store.
    system = await relay(inline_body_limit=0, direct=over_tls, **over_tls)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    _, _, rest = server.arrived[0].data.partition(b"Subject: hello")
    assert b"Subject: hello" + rest == BODY
    # It was in the store over TLS, and the spool removed it there once delivered.
    assert entry.body_key.startswith(store.BODY_PREFIX)
    await eventually(
        lambda: system.objects.exists(entry.body_key),
        until=lambda there: not there,
        what="the body to be removed from the TLS store",
    )


async def test_a_store_whose_certificate_is_not_trusted_gets_no_body_and_the_client_451(
    start_system: StartSystem,
    make_settings: Callable[..., settings.Settings],
    tls_store: TlsStore,
    private_ca: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    over_tls = {"s3_endpoint": tls_store.endpoint, "s3_tls_ca": private_ca[0]}
    # Every body goes to the bucket before the 250 (a small one would not need it).
    system = await start_system(frozen=True, direct=over_tls, inline_body_limit=0, **over_tls)
    # The store now shows a certificate of another CA (replaced, or an impostor on its
    # address): the services' CA did not sign it.
    other_ca, other_cert, other_key = issue(trustme.CA(), tmp_path / "pki", "other")
    tls_store.stop()
    tls_store.start(other_cert, other_key)

    wire = await Wire.open(system.smtp_port)
    reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY)
    await wire.close()

    assert reply == "451 4.3.0 Temporary failure queueing the message, try again later"
    assert await system.entries() == []
    seen_as_the_store_is = store.ObjectStore(
        make_settings(s3_endpoint=tls_store.endpoint, s3_tls_ca=other_ca)
    )
    try:
        assert await seen_as_the_store_is.keys("") == []
    finally:
        seen_as_the_store_is.close()


async def test_without_the_private_ca_the_store_is_not_trusted(
    make_settings: Callable[..., settings.Settings], tls_store: TlsStore
) -> None:
    # Verification is on whether or not a CA is given: the system's CAs did not sign it.
    objects = store.ObjectStore(make_settings(s3_endpoint=tls_store.endpoint))
    try:
        with pytest.raises(errors.StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await objects.ensure_bucket()
    finally:
        objects.close()
