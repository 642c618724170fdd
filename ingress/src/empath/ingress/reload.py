"""Certificates and AUTH users change on disk while ingress runs: it picks them up.

On Kubernetes both are Secret volumes, which the kubelet updates in place (cert-manager renews
a certificate, an operator adds a user). Every `EMPATH_TLS_RELOAD_INTERVAL` seconds the files
are looked at; when they changed, new sessions get the new certificate and users. A file that
does not load (half written, wrong) keeps the old one in service and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from empath.core import errors, periodic
from empath.ingress import credentials

log = logging.getLogger("empath.ingress.reload")


def signature(paths: list[Path]) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file (or the symlink the kubelet swaps) is replaced or rewritten."""
    found = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append((0, 0, 0))
            continue
        found.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


class Reloader:
    def __init__(
        self,
        *,
        context: ssl.SSLContext | None,
        cert_file: Path | None,
        key_file: Path | None,
        auth: credentials.Credentials | None,
        auth_file: Path | None,
    ) -> None:
        self.context, self.cert_file, self.key_file = context, cert_file, key_file
        self.auth, self.auth_file = auth, auth_file
        self._tls_seen = signature(self._tls_paths())
        self._auth_seen = signature(self._auth_paths())

    def _tls_paths(self) -> list[Path]:
        return [p for p in (self.cert_file, self.key_file) if p is not None]

    def _auth_paths(self) -> list[Path]:
        return [self.auth_file] if self.auth_file is not None else []

    def check(self) -> None:
        """Reload what changed since the last look."""
        now = signature(self._tls_paths())
        if self.context is not None and self.cert_file and self.key_file and now != self._tls_seen:
            try:
                self.context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as error:
                log.warning("TLS certificate changed but does not load, keeping the old: %s", error)
            else:
                self._tls_seen = now
                log.info("TLS certificate reloaded from %s", self.cert_file)
        now = signature(self._auth_paths())
        if self.auth is not None and self.auth_file and now != self._auth_seen:
            try:
                fresh = credentials.Credentials.load(self.auth_file)
            except (errors.ConfigurationError, OSError) as error:
                log.warning("AUTH users changed but do not load, keeping the old: %s", error)
            else:
                self.auth.replace(fresh)
                self._auth_seen = now
                log.info("AUTH users reloaded from %s (%d users)", self.auth_file, len(fresh))

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Look every `interval` seconds until `stop`.

        On the loop, not in a thread: the context is in use by handshakes here, and a stat and
        two small reads do not hold the loop up.
        """
        await periodic.every(
            interval, self.check, stop=stop, log=log, what="reloading", wait_first=True
        )
