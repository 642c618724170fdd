"""Fixtures the plugin tests share with the relay tests: a CA, ingress's certificate and AUTH
users (`tls_files`), and a client that trusts the CA (`client_tls`)."""

from tests.integration.smtp.test_relay_tls_auth import ca, client_tls, tls_files

__all__ = ["ca", "client_tls", "tls_files"]
