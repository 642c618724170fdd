"""What a C module's calls back into Empath do to its context, and the verdict that follows:
checked senders, bounded metadata, and replies read as the ancestor wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest

from empath.core import plugins
from empath.ingress import cmodules

SESSION = plugins.Session(id="S1", client_ip="192.0.2.1", tls_protocol="TLSv1.3", tls_cipher="X")


def context() -> cmodules.Context:
    return cmodules.Context.of_request(
        plugins.RcptRequest(
            session=SESSION,
            sender="a@sender.test",
            recipient="c@dest.test",
            accepted=("b@dest.test",),
            metadata={"seen": "1"},
        )
    )


def test_a_module_sees_the_request_as_the_ancestor_showed_it() -> None:
    seen = context()
    assert seen.text(cmodules.ID, None) == "S1"
    assert seen.text(cmodules.SENDER, None) == "a@sender.test"
    assert seen.recipients == ("b@dest.test", "c@dest.test")  # the one asked about last
    assert seen.text(cmodules.TLS_PROTOCOL, None) == "TLSv1.3"
    assert seen.number(cmodules.IS_TLS, None) == 1
    assert seen.text(cmodules.GET, "seen") == "1"
    assert seen.number(cmodules.EXISTS, "seen") == 1
    assert seen.number(cmodules.EXISTS, "unseen") == 0
    assert seen.number(cmodules.HAS_DELIVERY, None) == 0
    assert seen.text(cmodules.DOMAIN, None) is None


def test_data_is_told_with_the_queue_id_and_the_message() -> None:
    request = plugins.DataRequest(
        session=SESSION,
        id="01QUEUEID",
        sender="",
        recipients=("b@dest.test",),
        size=9,
        headers=(),
        body_base64="U3ViamVjdDo=",
    )
    seen = cmodules.Context.of_request(request)
    assert (seen.text(cmodules.ID, None), seen.text(cmodules.SENDER, None)) == ("01QUEUEID", "")
    assert seen.text(cmodules.DATA, None) == b"Subject:"


@pytest.mark.parametrize(
    "sender", ["", "not an address", "a@b@c", "ü@dest.test", "x" * 300 + "@d.test"]
)
def test_a_sender_that_is_not_an_address_is_refused_and_changes_nothing(sender: str) -> None:
    seen = context()
    assert not seen.set_sender(sender)
    assert seen.text(cmodules.SENDER, None) == "a@sender.test"
    assert seen.verdict(0, name="m").sender is None


def test_a_new_sender_and_the_null_sender() -> None:
    seen = context()
    assert seen.set_sender("bounces@example.net")
    assert seen.text(cmodules.SENDER, None) == "bounces@example.net"
    assert seen.verdict(0, name="m").sender == "bounces@example.net"
    assert seen.set_sender(None)
    assert seen.verdict(0, name="m").sender == ""


def test_metadata_keys_and_values_are_bounded_as_the_contract_says() -> None:
    seen = context()
    assert seen.set("spam.score", "1.5")
    assert not seen.set("a key", "x")
    assert not seen.set("k" * 65, "x")
    assert not seen.set("big", "v" * 1025)
    verdict = seen.verdict(0, name="m")
    assert verdict.metadata == {"spam.score": "1.5"}  # only what the module set


@pytest.mark.parametrize(
    ("code", "response", "line"),
    [
        (1, (421, "4.2.1 Failure!"), "421 4.2.1 Failure!"),
        (1, (550, "no thanks"), "550 5.7.1 no thanks"),
        (1, None, "550 5.7.1 Refused by m"),
        (1, (250, "OK [x]"), "550 5.7.1 Refused by m"),
        (0, (451, "4.7.0 later\r\nplease"), "451 4.7.0 later??please"),
    ],
)
def test_a_refusal_reads_as_the_module_set_it(
    code: int, response: tuple[int, str] | None, line: str
) -> None:
    seen = context()
    if response is not None:
        assert seen.set_response(*response)
    verdict = seen.verdict(code, name="m")
    assert verdict.refused
    assert verdict.reply is not None
    assert verdict.reply.line() == line


def test_a_positive_response_with_zero_accepts() -> None:
    seen = context()
    assert seen.set_response(250, "OK [x]")
    assert not seen.verdict(0, name="m").refused
    assert not seen.set_response(600, "nonsense")
    assert seen.set_response(250, None)
    assert seen.response is None


def test_an_event_tells_the_delivery() -> None:
    event = plugins.Event(
        event="deferred",
        at="2026-01-01T00:00:00Z",
        service="spool",
        id="01QUEUEID",
        metadata={"k": "v"},
        delivery=plugins.Delivery(
            domain="dest.test", server="mx.dest.test", reply="451 4.2.0 busy", attempt=3
        ),
    )
    seen = cmodules.Context.of_event(event)
    assert seen.number(cmodules.HAS_DELIVERY, None) == 1
    assert seen.text(cmodules.MESSAGE_ID, None) == "01QUEUEID"
    assert seen.text(cmodules.SERVER, None) == "mx.dest.test"
    assert seen.text(cmodules.ERROR, None) == "451 4.2.0 busy"
    assert seen.number(cmodules.ATTEMPTS, None) == 3
    assert seen.number(cmodules.IS_TLS, None) == 0


def test_the_readme_shows_the_example_module_the_tests_build() -> None:
    repo = Path(__file__).resolve().parents[3]
    example = (repo / "examples/c/policy.c").read_text()
    assert f"```c\n{example}```" in (repo / "README.md").read_text()
