"""The validation plugin runtime on its own: loading plugins, passing metadata along, and what
a refusal or a failure becomes."""

from __future__ import annotations

from typing import Any

import pytest

from empath.core import errors, plugins, settings
from empath.ingress import plugins as runtime
from empath.ingress import transports

SESSION = plugins.Session(id="s1", client_ip="192.0.2.1")


def declared(name: str, hooks: list[str], **options: Any) -> settings.Plugin:
    module = options.pop("module", f"tests.integration.plugins.samples:{name}")
    return settings.Plugin(name=name, hooks=hooks, module=module, **options)


def mail() -> plugins.MailRequest:
    return plugins.MailRequest(session=SESSION, sender="a@example.org")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tests.integration.plugins.samples:missing", "cannot load"),
        ("no_such_module_here:check", "cannot load"),
        ("no-such-entry-point", "no entry point"),
        ("tests.integration.plugins.samples:CALLS.__len__x", "cannot load"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_stops_the_service_naming_it(name: str, reason: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=reason):
        transports.load_function(name)


async def test_metadata_of_earlier_plugins_is_shown_to_later_ones_and_the_refusal_is_theirs() -> (
    None
):
    hooks = runtime.Runtime(
        [declared("second", ["mail"], priority=2), declared("first", ["mail"], priority=1)],
        bus=None,  # type: ignore[arg-type]  # in-process plugins need no bus
    )
    result = await hooks.check(mail(), about="s1")
    assert result.refusal == "451 4.7.0 second after first"
    assert result.metadata == {"seen-by": "first"}


@pytest.mark.parametrize(
    ("policy", "refusal"),
    [("Ignore", None), ("Fail", "451 4.7.1 Temporary policy failure, try again later")],
)
async def test_a_failing_plugin_follows_its_policy(policy: str, refusal: str | None) -> None:
    hooks = runtime.Runtime(
        [declared("broken", ["mail"], failure_policy=policy), declared("third", ["mail"])],
        bus=None,  # type: ignore[arg-type]
    )
    result = await hooks.check(mail(), about="s1")
    assert result.refusal == refusal


async def test_a_plugin_may_give_the_envelope_a_new_sender() -> None:
    hooks = runtime.Runtime([declared("new_sender", ["mail"])], bus=None)  # type: ignore[arg-type]
    result = await hooks.check(mail(), about="s1")
    assert (result.refusal, result.sender) == (None, "srs0=ab=cd=sender.test=a@example.net")


@pytest.mark.parametrize(
    ("policy", "refusal"),
    [("Ignore", None), ("Fail", "451 4.7.1 Temporary policy failure, try again later")],
)
async def test_a_new_sender_that_is_not_an_address_is_a_failure_and_never_used(
    policy: str, refusal: str | None
) -> None:
    hooks = runtime.Runtime(
        [declared("forged_sender", ["mail"], failure_policy=policy)],
        bus=None,  # type: ignore[arg-type]
    )
    result = await hooks.check(mail(), about="s1")
    assert (result.refusal, result.sender) == (refusal, None)


async def test_a_header_field_with_a_control_character_is_a_failure_and_never_added() -> None:
    hooks = runtime.Runtime(
        [declared("control_header", ["data"]), declared("stamp_data", ["data"])],
        bus=None,  # type: ignore[arg-type]
    )
    request = plugins.DataRequest(
        session=SESSION,
        id="q1",
        sender="a@example.org",
        recipients=("b@example.com",),
        size=0,
        headers=(),
    )
    result = await hooks.check(request, about="q1")
    assert [(h.name, h.value) for h in result.headers] == [("X-Stamped", "q1")]


async def test_an_answer_that_is_not_a_verdict_is_a_failure() -> None:
    hooks = runtime.Runtime(
        [declared("odd", ["mail"], module="builtins:str", failure_policy="Fail")],
        bus=None,  # type: ignore[arg-type]
    )
    result = await hooks.check(mail(), about="s1")
    assert result.refusal == "451 4.7.1 Temporary policy failure, try again later"


def test_only_hooks_some_plugin_names_are_asked() -> None:
    hooks = runtime.Runtime(
        [declared("first", ["mail"]), settings.Plugin(name="watcher", hooks=["delivered"])],
        bus=None,  # type: ignore[arg-type]
    )
    assert hooks.wants("mail")
    assert not hooks.wants("rcpt")
    assert not hooks.wants("connect")
