"""How a C module is declared in `EMPATH_PLUGINS`: `library` and `arguments`, hooks optional."""

from __future__ import annotations

import pytest

from empath.core import errors, plugins, settings


def test_a_c_module_may_leave_its_hooks_to_the_module() -> None:
    plugin = settings.Plugin(name="policy", library="/opt/empath/policy.so", arguments=["a", "b"])
    assert plugin.hooks == []
    assert plugin.arguments == ["a", "b"]
    # Not loaded yet, it may be an event listener: the services publish every event for it.
    assert plugin.event_hooks == set(plugins.EVENT_HOOKS)
    assert not plugin.validation_hooks


def test_a_c_module_naming_its_hooks_gets_only_those() -> None:
    plugin = settings.Plugin(name="p", library="/opt/p.so", hooks=["mail", "delivered"])
    assert plugin.validation_hooks == {"mail"}
    assert plugin.event_hooks == {"delivered"}


def test_a_library_that_is_not_there_yet_is_a_valid_setting() -> None:
    # The operator checks settings it renders for pods whose files it does not have:
    # ingress checks the file where it loads it.
    assert settings.Plugin(name="p", library="/not/here/yet.so").library is not None


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        ({"library": "policy.so"}, "library: give an absolute path"),
        ({"library": "/p.so", "url": "http://p/"}, "exactly one of module, url, subject and"),
        ({"library": "/p.so", "module": "m:f"}, "exactly one of module, url, subject and"),
        (
            {"url": "http://p/", "hooks": ["mail"], "arguments": ["x"]},
            "arguments are for a C module",
        ),
        ({"url": "http://p/"}, "hooks: name at least one"),
        ({"library": "/p.so", "arguments": ["x" * 5000]}, "at most 4096 characters"),
        ({"library": "/p.so", "hooks": ["smtp"]}, "Input should be 'connect'"),
    ],
)
def test_a_wrong_c_module_declaration_stops_the_service_naming_the_setting(
    declared: dict[str, object], problem: str
) -> None:
    with pytest.raises(errors.ConfigurationError) as raised:
        settings.load(environment=False, plugins=[{"name": "p", **declared}])
    assert str(raised.value).startswith("invalid setting EMPATH_PLUGINS: ")
    assert problem in str(raised.value)


def test_a_c_module_declaration_goes_to_another_process_unchanged() -> None:
    config = settings.load(
        environment=False,
        plugins=[{"name": "p", "library": "/opt/p.so", "arguments": ["x y", "z"], "timeout": 2}],
    )
    again = settings.load(
        environment=False,
        plugins=[plugin.model_dump(mode="json") for plugin in config.plugins],
    )
    assert again.plugins == config.plugins
