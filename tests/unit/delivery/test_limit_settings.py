"""The delivery limit settings: defaults that do not throttle a relay, rates where configured,
and the old per-worker names read with their new meaning or refused beside it."""

from __future__ import annotations

import pytest

from empath.core import errors, settings


def test_by_default_a_domain_gets_20_deliveries_at_once_and_no_rate_limit() -> None:
    config = settings.load(environment=False)
    assert config.delivery_destination_concurrency == 20
    assert config.delivery_rate_for("gmail.com") == 0
    assert config.delivery_circuit_failures == 5


def test_a_rate_applies_to_its_domain_and_the_default_to_every_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMPATH_DELIVERY_RATE_LIMITS", "Big.Example=20, slow.example=0.5")
    monkeypatch.setenv("EMPATH_DELIVERY_RATE_LIMIT_DEFAULT", "3")
    config = settings.load()
    assert config.delivery_rate_for("big.example") == 20
    assert config.delivery_rate_for("slow.example") == 0.5
    assert config.delivery_rate_for("other.example") == 3


def test_a_rate_that_is_not_domain_equals_number_stops_the_service_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMPATH_DELIVERY_RATE_LIMITS", "big.example=fast")
    with pytest.raises(errors.ConfigurationError, match="EMPATH_DELIVERY_RATE_LIMITS"):
        settings.load()


def test_the_old_names_still_work_with_the_installation_wide_meaning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMPATH_DELIVERY_MAX_CONNECTIONS_PER_DOMAIN", "7")
    monkeypatch.setenv("EMPATH_DELIVERY_RATE_PER_DOMAIN", "2")
    config = settings.load()
    assert config.delivery_destination_concurrency == 7
    assert config.delivery_rate_for("any.example") == 2
    # Only the new names are kept, so a copy of these settings holds each value once.
    assert config.delivery_max_connections_per_domain is None
    assert config.delivery_rate_per_domain is None


def test_an_old_name_beside_its_new_one_stops_the_service_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMPATH_DELIVERY_MAX_CONNECTIONS_PER_DOMAIN", "7")
    monkeypatch.setenv("EMPATH_DELIVERY_DESTINATION_CONCURRENCY", "30")
    with pytest.raises(errors.ConfigurationError) as raised:
        settings.load()
    assert "EMPATH_DELIVERY_MAX_CONNECTIONS_PER_DOMAIN" in str(raised.value)
    assert "EMPATH_DELIVERY_DESTINATION_CONCURRENCY" in str(raised.value)
