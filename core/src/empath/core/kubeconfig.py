"""Credentials from the kubernetes package's `Configuration`, in the shape httpx takes them.

`kubectl empath` and the operator both load a kubeconfig (or a pod's service account) with the
kubernetes package and then talk to the API server with httpx; this is the one translation.
"""

from __future__ import annotations

from typing import Any


def bearer(configuration: Any) -> str | None:
    """The bearer token (without `Bearer `), asked anew each time: the loaders' refresh hooks
    read a rotated service-account token or run an exec/OIDC plugin. Older releases of the
    package keep it as "authorization" rather than "BearerToken"."""
    value = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    return str(value).removeprefix("Bearer ").strip() if value else None


def tls(configuration: Any) -> tuple[Any, Any]:
    """httpx's `verify` and `cert` for the cluster: its CA, and a client certificate if any."""
    verify: Any = configuration.ssl_ca_cert or configuration.verify_ssl
    cert: Any = None
    if configuration.cert_file:
        cert = (configuration.cert_file, configuration.key_file or configuration.cert_file)
    return verify, cert
