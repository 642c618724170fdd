"""Outbound TLS policy per destination domain.

- `none`: never STARTTLS.
- `opportunistic`: STARTTLS when offered, any certificate.
- `verify` (default): STARTTLS when offered, and the certificate must be valid for the MX
  host name; without STARTTLS the message goes in plain text.
- `required`: like verify, and no STARTTLS means the attempt is deferred.
"""

from __future__ import annotations

import ssl
from functools import cache
from pathlib import Path

from empath.core import addresses
from empath.core.settings import Settings


def policy_for(settings: Settings, domain: str) -> str:
    return settings.tls_policies.get(addresses.normal_domain(domain), settings.tls_policy)


@cache
def context(policy: str, ca_file: Path | None) -> ssl.SSLContext | None:
    if policy == "none":
        return None
    tls = ssl.create_default_context()
    if ca_file is not None:
        tls.load_verify_locations(cafile=str(ca_file))
    if policy == "opportunistic":
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    return tls
