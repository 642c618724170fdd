"""`EMPATH_S3_TLS_CA`: the CA bundle an https object store is verified with is loaded at start,
so a wrong one stops the service naming the setting instead of failing its first message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from empath.core import errors, settings

EMPATH = str(Path(sys.executable).parent / "empath")
HTTPS = "https://s3.internal.test:8333"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_a_ca_bundle_for_an_https_endpoint_is_taken(ca_file: Path) -> None:
    config = settings.load(environment=False, s3_endpoint=HTTPS, s3_tls_ca=str(ca_file))
    assert config.s3_tls_ca == ca_file
    assert config.s3_secure


def bad_bundle(kind: str, directory: Path) -> Path:
    """A CA bundle setting that cannot be loaded, of the given kind."""
    path = directory / f"{kind}.pem"
    if kind == "a-directory":
        path.mkdir()
    elif kind == "not-pem":
        path.write_bytes(b"not a certificate\n")
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["missing", "a-directory", "not-pem", "empty"])
def test_a_ca_bundle_that_does_not_load_is_refused_by_name(tmp_path: Path, kind: str) -> None:
    path = bad_bundle(kind, tmp_path)
    with pytest.raises(errors.ConfigurationError) as refused:
        settings.load(environment=False, s3_endpoint=HTTPS, s3_tls_ca=str(path))
    assert str(refused.value).startswith(
        f"invalid setting EMPATH_S3_TLS_CA: cannot load {path}: "
    ), refused.value


def test_a_ca_bundle_for_a_plain_http_endpoint_is_refused(ca_file: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="EMPATH_S3_TLS_CA: given, but "):
        settings.load(
            environment=False, s3_endpoint="http://s3.internal.test:8333", s3_tls_ca=str(ca_file)
        )


def test_a_service_with_a_missing_ca_bundle_stops_at_start_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")}
    env |= {"EMPATH_S3_ENDPOINT": HTTPS, "EMPATH_S3_TLS_CA": str(tmp_path / "ca.pem")}
    result = subprocess.run(
        [EMPATH, "delivery"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("empath delivery: invalid setting EMPATH_S3_TLS_CA: ")
