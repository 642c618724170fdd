"""The envelope syntax ingress accepts, and the reply a client gets for what it refuses."""

from __future__ import annotations

import pytest

from empath.ingress import replies, syntax

SYNTAX_MAIL = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
BAD_SENDER = "553 5.1.7 Malformed sender address"


def split(argument: str, keyword: str = "FROM:") -> tuple[str, list[str]]:
    return syntax.split_path(argument, keyword, syntax_reply=SYNTAX_MAIL)


def mailbox(path: str) -> str:
    return syntax.mailbox(path, bad_reply=BAD_SENDER)


def refusal(call: object, *args: object) -> str:
    """The reply a client gets for this input."""
    with pytest.raises(syntax.SyntaxProblem) as problem:
        call(*args)  # type: ignore[operator]
    return problem.value.reply


# Paths


@pytest.mark.parametrize(
    ("argument", "path", "tokens"),
    [
        ("FROM:<alice@example.org>", "alice@example.org", []),
        ("from:<alice@example.org>", "alice@example.org", []),
        ("FROM: <alice@example.org>", "alice@example.org", []),  # a space many clients send
        ("FROM:<a@example.org> SIZE=10 BODY=7BIT", "a@example.org", ["SIZE=10", "BODY=7BIT"]),
        ("FROM:<>", "", []),  # the null sender
        ("FROM:<> RET=HDRS", "", ["RET=HDRS"]),
        ("FROM:alice@example.org SIZE=5", "alice@example.org", ["SIZE=5"]),  # no brackets
        ('FROM:<"a> b"@example.org>', '"a> b"@example.org', []),  # > inside quotes
        ('FROM:<"a\\"> b"@example.org>', '"a\\"> b"@example.org', []),
    ],
)  # fmt: skip
def test_a_path_and_its_parameters_are_split_apart(
    argument: str, path: str, tokens: list[str]
) -> None:
    assert split(argument) == (path, tokens)


@pytest.mark.parametrize(
    "argument",
    [
        "",
        "TO:<alice@example.org>",  # the wrong keyword for MAIL
        "FROM:",
        "FROM:<alice@example.org",  # no closing bracket
        'FROM:<"alice>@example.org',  # the bracket is inside an unclosed quote
        "FROM:<alice@example.org>SIZE=1",  # a parameter glued to the path
    ],
)
def test_a_malformed_path_argument_gets_the_syntax_reply(argument: str) -> None:
    assert refusal(split, argument) == SYNTAX_MAIL


@pytest.mark.parametrize(
    "path",
    [
        "alice@example.org",
        "alice.b.c+tag@mail.example.org",
        "!#$%&'*+/=?^_`{|}~-@example.org",
        '"alice smith"@example.org',
        '"quote\\"d and \\\\ back"@example.org',
        '""@example.org',
        "alice@[192.0.2.1]",
        "alice@[IPv6:2001:db8::1]",
        "alice@example.org.",  # a fully qualified domain, dot included
        "alice@localhost",
        "a@b-c.d1",
        "δοκιμή@παράδειγμα.δοκιμή",  # SMTPUTF8 (RFC 6531)
        "用户@例子.广告",
    ],
)
def test_a_valid_mailbox_is_accepted_as_given(path: str) -> None:
    assert mailbox(path) == path


def test_an_obsolete_source_route_is_dropped() -> None:
    assert mailbox("@relay.example,@other.example:alice@example.org") == "alice@example.org"


@pytest.mark.parametrize(
    "path",
    [
        "alice",
        "alice@",
        "@example.org",
        "alice@@example.org",
        "al ice@example.org",
        ".alice@example.org",
        "alice.@example.org",
        "al..ice@example.org",
        '"unclosed@example.org',
        '"a"b@example.org',
        'a"b"@example.org',
        "alice@-example.org",
        "alice@example-.org",
        "alice@example..org",
        "alice@.example.org",
        "alice@exa_mple.org",
        "alice@[192.0.2.1",
        "alice@[not an address]",
        "alice\x00@example.org",
        "alice@example.org\r\nRCPT TO:<x@y.z>",
        "<alice@example.org>",
        "alice@" + "a" * 64 + ".org",  # a label over 63 octets
    ],
)
def test_a_malformed_mailbox_gets_the_bad_address_reply(path: str) -> None:
    assert refusal(mailbox, path) == BAD_SENDER


def test_a_path_is_at_most_256_octets() -> None:
    domain = ".".join(["d" * 60] * 3) + ".org"  # 187 characters
    fits = "l" * (256 - len(domain) - 1) + "@" + domain
    assert len(fits) == 256

    assert mailbox(fits) == fits
    assert refusal(mailbox, "l" + fits) == BAD_SENDER


# MAIL parameters


def test_no_mail_parameters_mean_7bit_and_no_dsn_options() -> None:
    assert syntax.mail_parameters([]) == syntax.MailParameters(
        size=None, body="7BIT", smtputf8=False, ret=None, envid=None
    )


def test_every_mail_parameter_is_read() -> None:
    parameters = syntax.mail_parameters(
        ["size=12345", "Body=8bitmime", "SMTPUTF8", "RET=hdrs", "ENVID=QQ+2B314159", "AUTH=<>"]
    )

    assert parameters == syntax.MailParameters(
        size=12345, body="8BITMIME", smtputf8=True, ret="HDRS", envid="QQ+2B314159"
    )


def test_envid_keeps_its_case_and_encoding() -> None:
    assert syntax.mail_parameters(["ENVID=Ab+2Bc+3Dd"]).envid == "Ab+2Bc+3Dd"


@pytest.mark.parametrize(
    ("token", "name"),
    [
        ("SIZE", "SIZE"),
        ("SIZE=", "SIZE"),
        ("SIZE=-1", "SIZE"),
        ("SIZE=1e6", "SIZE"),
        ("SIZE=" + "9" * 21, "SIZE"),
        ("BODY=BINARYMIME", "BODY"),
        ("BODY", "BODY"),
        ("SMTPUTF8=yes", "SMTPUTF8"),
        ("RET=ALL", "RET"),
        ("RET", "RET"),
        ("ENVID", "ENVID"),
        ("ENVID=a+2b", "ENVID"),  # xtext hex digits are upper case
        ("ENVID=a+2", "ENVID"),
        ("ENVID=a+", "ENVID"),
        ("ENVID=é", "ENVID"),  # xtext is ASCII
        ("ENVID=" + "x" * 101, "ENVID"),
        ("AUTH", "AUTH"),
        ("-SIZE=1", "-SIZE"),
    ],
)
def test_a_bad_mail_parameter_value_is_refused_naming_it(token: str, name: str) -> None:
    reply = refusal(syntax.mail_parameters, [token])

    assert reply == f"501 5.5.4 Invalid value for parameter {name}"


def test_an_envid_of_100_characters_is_accepted() -> None:
    assert syntax.mail_parameters(["ENVID=" + "x" * 100]).envid == "x" * 100


def test_an_unknown_mail_parameter_is_refused_with_555() -> None:
    assert refusal(syntax.mail_parameters, ["HOLDFOR=60"]) == (
        "555 5.5.4 Unsupported parameter: HOLDFOR"
    )


def test_a_parameter_given_twice_is_refused_whatever_its_case() -> None:
    assert refusal(syntax.mail_parameters, ["SIZE=1", "size=2"]) == (
        "501 5.5.4 Parameter SIZE given twice"
    )


def test_the_big_sizes_a_client_declares_are_read_exactly() -> None:
    assert syntax.mail_parameters(["SIZE=" + "9" * 20]).size == 10**20 - 1


# RCPT parameters


@pytest.mark.parametrize(
    ("token", "notify"),
    [
        ("NOTIFY=NEVER", ("NEVER",)),
        ("NOTIFY=never", ("NEVER",)),
        ("NOTIFY=SUCCESS", ("SUCCESS",)),
        ("NOTIFY=failure,Delay", ("FAILURE", "DELAY")),
        ("NOTIFY=SUCCESS,FAILURE,DELAY", ("SUCCESS", "FAILURE", "DELAY")),
    ],
)
def test_notify_is_read_in_upper_case_and_in_order(token: str, notify: tuple[str, ...]) -> None:
    assert syntax.rcpt_parameters([token]).notify == notify


@pytest.mark.parametrize(
    "token",
    [
        "NOTIFY",
        "NOTIFY=NEVER,SUCCESS",  # NEVER stands alone (RFC 3461 §4.1)
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=SOMETIMES",
        "NOTIFY=SUCCESS,",
        "ORCPT",
        "ORCPT=bob@example.com",  # no address type
        "ORCPT=;bob@example.com",
        "ORCPT=rfc 822;bob@example.com",
        "ORCPT=rfc822;bob+example.com",  # '+' starts an xtext escape
        "ORCPT=rfc822;bøb@example.com",  # rfc822 addresses are xtext: ASCII
        "ORCPT=rfc822;" + "x" * 501,
        "ORCPT=utf-8;" + "x" * 501,
    ],
)
def test_a_bad_rcpt_parameter_is_refused_naming_it(token: str) -> None:
    name = token.partition("=")[0]

    assert refusal(syntax.rcpt_parameters, [token]) == (
        replies.BAD_PARAMETER.format(name=name.upper())
    )


@pytest.mark.parametrize(
    "orcpt",
    [
        "rfc822;bob@example.com",
        "rfc822;Bob+2BLists@Example.COM",
        "RFC822;bob@example.com",
        "x400;c+3Dus+3Ba+3D+20+3Bp+3Dx",
        "utf-8;bøb@exämple.com",  # RFC 6533 utf-8-addr-xtext
        "rfc822;",
    ],
)
def test_orcpt_is_kept_exactly_as_the_client_wrote_it(orcpt: str) -> None:
    assert syntax.rcpt_parameters([f"ORCPT={orcpt}"]).orcpt == orcpt


def test_no_rcpt_parameters_mean_no_dsn_options() -> None:
    assert syntax.rcpt_parameters([]) == syntax.RcptParameters(notify=None, orcpt=None)


def test_mail_parameters_are_not_rcpt_parameters() -> None:
    assert refusal(syntax.rcpt_parameters, ["SIZE=10"]) == "555 5.5.4 Unsupported parameter: SIZE"
    assert refusal(syntax.mail_parameters, ["NOTIFY=NEVER"]) == (
        "555 5.5.4 Unsupported parameter: NOTIFY"
    )


def test_size_takes_ascii_digits_only() -> None:
    for value in ("²", "٣٣", "１０"):
        with pytest.raises(syntax.SyntaxProblem, match=r"parameter SIZE$"):
            syntax.mail_parameters([f"SIZE={value}"])


def test_parameters_are_separated_by_spaces_only() -> None:
    """RFC 5321 §4.1.2: Mail-parameters = esmtp-param *(SP esmtp-param); an RFC 6533
    utf-8 ORCPT may hold a no-break space."""
    _, tokens = syntax.split_path(
        "TO:<bob@example.com> ORCPT=utf-8;bob\xa0smith@example.com", "TO:", syntax_reply="501"
    )

    assert tokens == ["ORCPT=utf-8;bob\xa0smith@example.com"]
    assert syntax.rcpt_parameters(tokens).orcpt == "utf-8;bob\xa0smith@example.com"


@pytest.mark.parametrize(
    "name",
    [
        "evil.test\rX-Injected: yes\rBcc: hidden@other.org",
        "evil.test\nX-Injected: yes",
        "evil\x00.test",
        "evil\x1b[31m.test",
        "evil\x85.test",
        "\udcff\udcfe.test",
        "",
        "x" * 256,
    ],
)
def test_a_helo_name_with_a_control_character_or_bad_bytes_is_refused_with_501(name: str) -> None:
    reply = "501 5.5.4 Syntax: EHLO hostname"

    assert refusal(lambda: syntax.helo_name(name, syntax_reply=reply)) == reply


def test_helo_takes_names_literals_and_internationalised_names() -> None:
    for name in ("mx.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]", "bücher.example", "PC 1"):
        assert syntax.helo_name(name, syntax_reply="501") == name


def test_unchecked_text_for_a_header_shows_controls_as_question_marks() -> None:
    assert syntax.printable("a\rb\nc\x00d\udcffe\x85f ü") == "a?b?c?d?e?f ü"
