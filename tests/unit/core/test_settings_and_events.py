"""Settings name what is wrong; events keep the schema they publish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from empath.core import errors, events, queries, settings
from empath.operator.main import PREFIX, OperatorSettings

EMPATH = str(Path(sys.executable).parent / "empath")
REPO = Path(__file__).resolve().parents[3]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EMPATH_MAX_MESSAGE_SIZE", "lots", "EMPATH_MAX_MESSAGE_SIZE"),
        ("EMPATH_MAX_MESSAGE_SIZE", "10", "greater than or equal to 1024"),
        ("EMPATH_TRUSTED_NETWORKS", "0.0.0.0/0", "open relay"),
        ("EMPATH_TRUSTED_NETWORKS", "10.0.0.300/8", "EMPATH_TRUSTED_NETWORKS"),
        ("EMPATH_NATS_URL", "http://127.0.0.1:4222", "EMPATH_NATS_URL"),
        ("EMPATH_S3_ENDPOINT", "127.0.0.1:8333", "EMPATH_S3_ENDPOINT"),
        ("EMPATH_SMTP_LISTEN", "127.0.0.1", "EMPATH_SMTP_LISTEN"),
        ("EMPATH_RELAY_DOMAINS", "a@b.com", "EMPATH_RELAY_DOMAINS"),
        ("EMPATH_TLS_CERT_FILE", "/nonexistent.pem", "tls_cert_file and tls_key_file"),
        ("EMPATH_SUBMISSION_LISTEN", "127.0.0.1:2587", "EMPATH_SUBMISSION_LISTEN needs"),
        ("EMPATH_LOG_FORMAT", "xml", "EMPATH_LOG_FORMAT"),
    ],
)
def test_a_bad_setting_stops_the_service_naming_the_setting(
    variable: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [EMPATH, "ingress"],
        env=clean_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("empath ingress: invalid setting")


def test_settings_come_from_the_environment_and_a_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "empath.yaml"
    config.write_text(
        "hostname: mx.example.com\nrelay_domains: [Example.COM, .example.net]\n"
        "max_recipients: 50\ntrusted_networks: [10.0.0.0/8]\n"
    )
    for name in list(os.environ):
        if name.startswith("EMPATH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EMPATH_CONFIG", str(config))
    monkeypatch.setenv("EMPATH_MAX_RECIPIENTS", "70")  # the environment wins over the file
    loaded = settings.load()
    assert loaded.hostname == "mx.example.com"
    assert loaded.relay_domains == ["example.com", ".example.net"]
    assert loaded.max_recipients == 70
    assert [str(n) for n in loaded.trusted_networks] == ["10.0.0.0/8"]
    assert loaded.max_message_size == 25 * 1024 * 1024


def test_comma_lists_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EMPATH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EMPATH_RELAY_DOMAINS", "a.example, b.example.")
    monkeypatch.setenv("EMPATH_TRUSTED_NETWORKS", "192.0.2.0/24, 2001:db8::/32")
    loaded = settings.load()
    assert loaded.relay_domains == ["a.example", "b.example"]
    assert [str(n) for n in loaded.trusted_networks] == ["192.0.2.0/24", "2001:db8::/32"]
    assert loaded.max_recipients == 1000
    assert loaded.smtp_listen == "127.0.0.1:2525"


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPATH_CONFIG", "/nonexistent/empath.yaml")
    with pytest.raises(errors.ConfigurationError, match="EMPATH_CONFIG"):
        settings.load()


def test_empath_schemas_writes_exactly_the_committed_schemas(tmp_path: Path) -> None:
    """Every event (current and older versions still read) and every query request and
    answer; a model change that is not re-exported and committed fails here."""
    target = tmp_path / "schemas"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "empath"), "schemas", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in target.iterdir())
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == written
    assert {events.schema_name(event) for event in events.EVENTS} <= set(written)
    assert {f"queue.{call.name}.answer.json" for call in queries.CALLS} <= set(written)
    committed = REPO / "core" / "schemas"
    assert sorted(p.name for p in committed.iterdir()) == written
    for name in written:
        assert (target / name).read_bytes() == (committed / name).read_bytes(), (
            f"{name} changed: run `empath schemas core/schemas` and bump the version "
            "if the change is not backward compatible"
        )


def test_an_event_of_an_unknown_version_is_refused() -> None:
    raw = json.loads(
        events.Received(
            id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
            body_key="k",
            size=1,
            received_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
            envelope=events.Envelope(sender="", recipients=(events.Recipient(address="a@b.c"),)),
            client=events.Client(ip="192.0.2.1"),
        ).model_dump_json()
    )
    raw["version"] = 5  # received is at version 4: 5 is unknown
    with pytest.raises(ValueError, match="version"):
        events.Received.model_validate(raw)


def test_the_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    names = [f"EMPATH_{name.upper()}" for name in settings.Settings.model_fields]
    names += [f"{PREFIX}{name.upper()}" for name in OperatorSettings.model_fields]
    assert [name for name in names if f"`{name}`" not in readme] == []
