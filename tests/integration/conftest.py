"""Fixtures the integration areas share: TLS and AUTH for ingress (`tests.tls_auth`)."""

from tests.tls_auth import ca, client_tls, tls_files

__all__ = ["ca", "client_tls", "tls_files"]
