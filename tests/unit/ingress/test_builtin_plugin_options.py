"""The options of the plugins that ship (DKIM, SPF) and of plugin factories in general: read into
a typed model at start, and a wrong one stops ingress naming the plugin and the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from empath.core import errors, settings
from empath.ingress import transports
from empath.ingress.builtin import dkim_signing, spf_check
from tests.dkim_keys import write_key, write_weak_key


def load(**declared: Any) -> Any:
    config = settings.Plugin(**declared)
    return transports.load_in_process(config, settings.load(environment=False, hostname="mx.test"))


def dkim(keys: Path, **options: Any) -> dict[str, Any]:
    return {
        "name": "signer",
        "hooks": ["data"],
        "module": "dkim",
        "body_limit": 1024,
        "options": {"key_directory": str(keys), **options},
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    write_key(directory, "s1.example.com.pem")
    write_key(directory, "shared.pem")
    write_weak_key(directory, "weak.pem")
    (directory / "garbage.pem").write_text("not a key\n")
    return directory


def test_dkim_defaults_sign_relaxed_relaxed_with_the_selector_given_for_all(keys: Path) -> None:
    signer = load(**dkim(keys, selector="s1", domains={"Example.COM.": {}}))
    assert isinstance(signer, dkim_signing.Signing)
    assert signer.canonicalize == (b"relaxed", b"relaxed")
    assert signer.options.sign_trusted
    key = signer.key_for("example.com")
    assert key is not None
    assert (key.domain, key.selector) == ("example.com", "s1")
    assert key.private_key == (keys / "s1.example.com.pem").read_bytes()


def test_dkim_domains_match_exactly_or_by_a_leading_dot_their_subdomains(keys: Path) -> None:
    signer = load(
        **dkim(
            keys,
            domains={
                "example.com": {"selector": "s1"},
                ".example.org": {"selector": "s2", "key": "shared.pem"},
            },
        )
    )
    assert signer.key_for("sub.example.com") is None
    assert signer.key_for("example.org") is None
    key = signer.key_for("a.b.example.org")
    assert key is not None
    assert (key.domain, key.selector) == ("example.org", "s2")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"selector": "s1", "domains": {}}, "options.domains: "),
        ({"domains": {"example.com": {}}}, "options.domains.example.com: no selector"),
        ({"selector": "s1", "domains": {"example.com": {"key": "../etc/passwd"}}}, ".key: "),
        ({"selector": "s1", "domains": {"a b": {}}}, "options.domains: 'a b': a domain is labels"),
        ({"selector": "bad selector!", "domains": {"example.com": {}}}, "options.selector: "),
        ({"selector": "s1", "domains": {"example.com": {}}, "canon": "x"}, "options.canon: "),
        (
            {"selector": "s1", "domains": {"example.com": {}}, "canonicalization": "loose"},
            "options.canonicalization: ",
        ),
        (
            {"selector": "s1", "domains": {"example.com": {"key": "missing.pem"}}},
            "options.domains.example.com: cannot read ",
        ),
        (
            {"selector": "s1", "domains": {"example.com": {"key": "garbage.pem"}}},
            "garbage.pem is no PEM RSA private key",
        ),
        (
            {"selector": "s1", "domains": {"example.com": {"key": "weak.pem"}}},
            "weak.pem is a 476-bit key; DKIM needs 1024 bits or more",
        ),
    ],
)
def test_a_wrong_dkim_option_stops_ingress_naming_the_plugin_and_the_option(
    keys: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(errors.ConfigurationError) as raised:
        load(**dkim(keys, **options))
    assert str(raised.value).startswith("EMPATH_PLUGINS: plugin 'signer': ")
    assert named in str(raised.value)


def test_dkim_needs_its_key_directory_a_body_limit_and_the_data_hook(
    keys: Path, tmp_path: Path
) -> None:
    options = {"selector": "s1", "domains": {"example.com": {}}}
    with pytest.raises(errors.ConfigurationError, match="key_directory: no such directory"):
        load(**dkim(tmp_path / "nowhere", **options))
    with pytest.raises(errors.ConfigurationError, match="body_limit: the DKIM signature"):
        load(**(dkim(keys, **options) | {"body_limit": 0}))
    with pytest.raises(errors.ConfigurationError, match="signs at `data`"):
        load(**(dkim(keys, **options) | {"hooks": ["mail"]}))


@pytest.mark.parametrize(
    ("headers", "domain"),
    [
        ((("From", "Alice <alice@Example.COM>"),), "example.com"),
        ((("from", "bob@example.org"), ("To", "x@y.test")), "example.org"),
        ((("To", "x@y.test"),), None),  # no From
        ((("From", "a@one.test"), ("From", "b@two.test")), None),  # two From fields
        ((("From", "a@one.test, b@two.test"),), None),  # two authors
        ((("From", "undisclosed"),), None),
    ],
)
def test_the_signing_domain_is_chosen_by_the_one_from_address(
    headers: tuple[tuple[str, str], ...], domain: str | None
) -> None:
    assert dkim_signing.from_domain(headers) == domain


def spf(**declared: Any) -> dict[str, Any]:
    return {"name": "spf", "hooks": ["mail", "data"], "module": "spf", **declared}


def test_spf_defaults_end_before_the_plugin_timeout_and_speak_for_our_hostname() -> None:
    check = load(**spf())
    assert isinstance(check, spf_check.Check)
    assert (check.time_limit, check.authserv_id) == (4.0, "mx.test")
    assert not check.options.refuse_on_fail
    assert not check.options.defer_on_temperror
    assert load(**spf(timeout=60)).time_limit == 20.0  # RFC 7208's 20 s when there is room
    given = load(**spf(timeout=30, options={"time_limit": 10, "authserv_id": "auth.example"}))
    assert (given.time_limit, given.authserv_id) == (10.0, "auth.example")


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ({"options": {"time_limit": 5}}, "options.time_limit: 5 s does not end before"),
        ({"options": {"refuse_on_fail": "sometimes"}}, "options.refuse_on_fail: "),
        ({"options": {"reject": True}}, "options.reject: "),
        ({"hooks": ["mail"]}, "hooks lack data"),
    ],
)
def test_a_wrong_spf_option_stops_ingress_naming_it(declared: dict[str, Any], named: str) -> None:
    with pytest.raises(errors.ConfigurationError) as raised:
        load(**spf(**declared))
    assert str(raised.value).startswith("EMPATH_PLUGINS: plugin 'spf': ")
    assert named in str(raised.value)


def test_options_are_for_an_in_process_plugin_that_is_a_factory() -> None:
    with pytest.raises(ValidationError, match="options are for an in-process plugin"):
        settings.Plugin(name="remote", hooks=["mail"], url="http://x.test/", options={})
    with pytest.raises(errors.ConfigurationError, match="takes no options"):
        load(
            name="plain",
            hooks=["mail"],
            module="tests.integration.plugins.samples:first",
            options={"a": 1},
        )


def test_ipv4_mapped_clients_are_checked_as_ipv4() -> None:
    assert spf_check.client_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert spf_check.client_address("2001:db8::1") == "2001:db8::1"
