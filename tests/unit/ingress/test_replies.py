"""The reply catalogue on its own: every reply carries a well-formed enhanced code."""

from __future__ import annotations

import re

import pytest

from empath.ingress import replies

ENHANCED = re.compile(r"^(?P<code>[245])\d\d[ -](?P<class>[245])\.\d{1,3}\.\d{1,3}( |$)")


def catalogue() -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in vars(replies).items()
        if name.isupper() and isinstance(value, str) and value[:1] in "245"
    ]


@pytest.mark.parametrize(("name", "reply"), catalogue())
def test_each_catalogued_reply_has_a_matching_enhanced_code(name: str, reply: str) -> None:
    match = ENHANCED.match(reply)
    assert match, name
    assert match["code"] == match["class"], f"{name}: {reply}"


@pytest.mark.parametrize(
    ("raw", "enhanced"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("501 Syntax: VRFY <address>", "501 5.5.4 Syntax: VRFY <address>"),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("503 Already authenticated", "503 5.5.1 Already authenticated"),
        (
            "530 Must issue a STARTTLS command first",
            "530 5.7.0 Must issue a STARTTLS command first",
        ),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("250-SIZE 100", "250-2.0.0 SIZE 100"),
        ("599 odd", "599 5.0.0 odd"),
    ],
)
def test_replies_without_a_code_get_one(raw: str, enhanced: str) -> None:
    assert replies.enhance(raw) == enhanced


@pytest.mark.parametrize(
    "line", ["354 End data with <CR><LF>.<CR><LF>", "334 VXNlcm5hbWU6", "535 5.7.8 Bad", ""]
)
def test_replies_that_need_no_code_are_left_alone(line: str) -> None:
    assert replies.enhance(line) == line
