"""Properties of the envelope parser: whatever RFC 5321 (and RFC 6531, 1870, 3461, 6152)
allows is read back as written, and no input makes it fail with anything but its own error."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empath.core import addresses
from empath.ingress import syntax

SOME = settings(max_examples=300)

# RFC 5321 §4.1.2 and RFC 6531 §3.3, written out from the grammar (not from the module's regexes).
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
LET_DIG = string.ascii_letters + string.digits
QTEXT = "".join(chr(c) for c in (32, 33, *range(35, 92), *range(93, 127)))
# Less the C1 controls (Cc): RFC 6531 would let them through, but an address reaches headers
# and logs, which take no control character (issue 10).
NON_ASCII = st.characters(min_codepoint=0x80, exclude_categories=("Cs", "Cc"))
U_LETTER = st.characters(min_codepoint=0xC0, categories=("Ll", "Lu", "Lo"))


def atoms(utf8: bool) -> st.SearchStrategy[str]:
    alphabet = st.sampled_from(ATEXT) | NON_ASCII if utf8 else st.sampled_from(ATEXT)
    return st.text(alphabet, min_size=1, max_size=8)


def local_parts(utf8: bool) -> st.SearchStrategy[str]:
    dot_string = st.lists(atoms(utf8), min_size=1, max_size=4).map(".".join)
    qtext = st.sampled_from(QTEXT) | NON_ASCII if utf8 else st.sampled_from(QTEXT)
    quoted_pair = st.sampled_from([chr(c) for c in range(32, 127)]).map(lambda c: "\\" + c)
    quoted = st.lists(qtext | quoted_pair, max_size=12).map(lambda p: '"' + "".join(p) + '"')
    return dot_string | quoted


def labels(utf8: bool) -> st.SearchStrategy[str]:
    ends = st.sampled_from(LET_DIG) | U_LETTER if utf8 else st.sampled_from(LET_DIG)
    middle = st.text(
        st.sampled_from(LET_DIG + "-") | (U_LETTER if utf8 else st.nothing()), max_size=61
    )
    return ends | st.builds(lambda a, m, b: a + m + b, ends, middle, ends)


def domains(utf8: bool) -> st.SearchStrategy[str]:
    names = st.builds(
        lambda parts, dot: ".".join(parts) + dot,
        st.lists(labels(utf8), min_size=1, max_size=4),
        st.sampled_from(["", "."]),
    )
    literals = st.ip_addresses(v=4).map(lambda a: f"[{a}]") | st.ip_addresses(v=6).map(
        lambda a: f"[IPv6:{a}]"
    )
    return names | literals


def mailboxes(utf8: bool = False) -> st.SearchStrategy[tuple[str, str]]:
    """(mailbox, its domain), at most the 256 octets of a path."""
    return st.tuples(local_parts(utf8), domains(utf8)).filter(
        lambda pair: len(pair[0]) + 1 + len(pair[1]) <= syntax.MAX_PATH
    )


def any_case(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.capitalize()])


XTEXT = st.lists(
    st.sampled_from([chr(c) for c in range(0x21, 0x7F) if chr(c) not in "+="])
    | st.sampled_from("0123456789ABCDEF").flatmap(
        lambda a: st.sampled_from("0123456789ABCDEF").map(lambda b: f"+{a}{b}")
    ),
    max_size=30,
).map("".join)


@st.composite
def mail_parameters(draw: st.DrawFn) -> tuple[list[str], syntax.MailParameters]:
    """Tokens a client may send on MAIL (any case, any order), and what they mean."""
    chosen = draw(st.sets(st.sampled_from(["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"])))
    tokens: list[str] = []
    meaning: dict[str, object] = {}
    for name in chosen:
        keyword = draw(any_case(name))
        if name == "SIZE":
            meaning["size"] = draw(st.integers(0, 10**20 - 1))
            tokens.append(f"{keyword}={meaning['size']}")
        elif name == "BODY":
            meaning["body"] = draw(st.sampled_from(["7BIT", "8BITMIME"]))
            tokens.append(f"{keyword}={draw(any_case(str(meaning['body'])))}")
        elif name == "SMTPUTF8":
            meaning["smtputf8"] = True
            tokens.append(keyword)
        elif name == "RET":
            meaning["ret"] = draw(st.sampled_from(["FULL", "HDRS"]))
            tokens.append(f"{keyword}={draw(any_case(str(meaning['ret'])))}")
        elif name == "ENVID":
            meaning["envid"] = draw(XTEXT.filter(lambda x: 0 < len(x) <= 100))  # 1*esmtp-value
            tokens.append(f"{keyword}={meaning['envid']}")
        else:
            tokens.append(f"{keyword}={draw(st.sampled_from(['<>', 'alice+40example.org']))}")
    return draw(st.permutations(tokens)), syntax.MailParameters(**meaning)  # type: ignore[arg-type]


@st.composite
def rcpt_parameters(draw: st.DrawFn) -> tuple[list[str], syntax.RcptParameters]:
    tokens: list[str] = []
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    if draw(st.booleans()):
        notify = draw(
            st.just(("NEVER",))
            | st.permutations(["SUCCESS", "FAILURE", "DELAY"]).flatmap(
                lambda kinds: st.integers(1, 3).map(lambda n: tuple(kinds[:n]))
            )
        )
        tokens.append(f"{draw(any_case('NOTIFY'))}={draw(any_case(','.join(notify)))}")
    if draw(st.booleans()):
        # RFC 6533 utf-8-addr-xtext, less "=" (esmtp-value) and white space: SP separates
        # parameters, and other white space is for the junk tests.
        utf8_text = st.text(
            st.characters(min_codepoint=0x21, exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
            max_size=40,
        ).filter(lambda text: "=" not in text and len(text.split()) == 1)
        orcpt = draw(
            st.builds(lambda t, x: f"{t};{x}", any_case("rfc822"), XTEXT)
            | st.builds(lambda t, x: f"{t};{x}", any_case("utf-8"), utf8_text)
        )
        tokens.append(f"{draw(any_case('ORCPT'))}={orcpt}")
    return draw(st.permutations(tokens)), syntax.RcptParameters(notify=notify, orcpt=orcpt)


@SOME
@given(mailboxes())
def test_every_rfc_5321_mailbox_is_accepted_as_written(pair: tuple[str, str]) -> None:
    local, domain = pair
    path = f"{local}@{domain}"

    assert syntax.mailbox(path, bad_reply="553") == path
    assert addresses.domain_of(path) == domain.lower().rstrip(".")


@SOME
@given(mailboxes(utf8=True))
def test_every_smtputf8_mailbox_is_accepted_as_written(pair: tuple[str, str]) -> None:
    path = f"{pair[0]}@{pair[1]}"

    assert syntax.mailbox(path, bad_reply="553") == path


@SOME
@given(mailboxes(utf8=True), mail_parameters())
def test_a_mail_command_splits_into_its_path_and_parameters_and_reads_back(
    pair: tuple[str, str], parameters: tuple[list[str], syntax.MailParameters]
) -> None:
    path = f"{pair[0]}@{pair[1]}"
    tokens, meaning = parameters
    argument = f"FROM:<{path}>" + "".join(" " + t for t in tokens)

    assert syntax.split_path(argument, "FROM:", syntax_reply="501") == (path, tokens)
    assert syntax.mail_parameters(tokens) == meaning


@SOME
@given(mailboxes(), rcpt_parameters())
def test_a_rcpt_command_splits_into_its_path_and_parameters_and_reads_back(
    pair: tuple[str, str], parameters: tuple[list[str], syntax.RcptParameters]
) -> None:
    path = f"{pair[0]}@{pair[1]}"
    tokens, meaning = parameters
    argument = f"TO: <{path}>" + "".join(" " + t for t in tokens)

    assert syntax.split_path(argument, "TO:", syntax_reply="501") == (path, tokens)
    assert syntax.rcpt_parameters(tokens) == meaning


@SOME
@given(domains(utf8=True), st.integers(1, 40))
def test_a_path_over_256_octets_is_never_accepted(domain: str, extra: int) -> None:
    local = "x" * (syntax.MAX_PATH - len(domain) - 1 + extra)

    with pytest.raises(syntax.SyntaxProblem, match=r"^553$"):
        syntax.mailbox(f"{local}@{domain}", bad_reply="553")


SMTP_JUNK = st.text(st.sampled_from('<>"\\@.:,[]= +-aZ09\x00\r\n\t\x7fÄ²'), max_size=40)


@settings(max_examples=500)
@given(st.sampled_from(["FROM:", "TO:"]), SMTP_JUNK | st.text(max_size=40))
def test_junk_gets_a_reply_never_a_crash(keyword: str, argument: str) -> None:
    """Whatever follows MAIL or RCPT, the parser answers with a reply (SyntaxProblem) or
    accepts it; it never fails with another exception (which the client would see as a 500
    for an internal error, or a dropped session)."""
    with contextlib.suppress(syntax.SyntaxProblem):
        path, _ = syntax.split_path(keyword + argument, keyword, syntax_reply="501")
        addresses.domain_of(path)
        if path:
            syntax.mailbox(path, bad_reply="553")
    for parse in (syntax.mail_parameters, syntax.rcpt_parameters):
        with contextlib.suppress(syntax.SyntaxProblem):
            parse(argument.split())


PARAMETER_NAMES = st.sampled_from(
    ["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "NOTIFY", "ORCPT"]
)


@settings(max_examples=500)
@given(
    st.lists(
        st.builds(
            lambda n, v: f"{n}={v}",
            PARAMETER_NAMES,
            st.text(st.sampled_from("09²٣１"), min_size=1)
            | SMTP_JUNK.map(lambda v: "".join(v.split())),
        )
    )
)
def test_junk_parameter_values_get_a_reply_never_a_crash(tokens: list[str]) -> None:
    for parse in (syntax.mail_parameters, syntax.rcpt_parameters):
        with contextlib.suppress(syntax.SyntaxProblem):
            parse(tokens)


@SOME
@given(
    st.text(st.sampled_from(ATEXT), min_size=1, max_size=8),
    st.sampled_from(["\x80", "\x85", "\x9b", "\udcff", "\udcfe\udcff", "\ud800"]),
)
def test_a_mailbox_with_a_control_or_undecodable_byte_is_refused(local: str, bad: str) -> None:
    for path in (f"{local}{bad}@example.com", f"{local}@ex{bad}ample.com", f'"{local}{bad}"@x.org'):
        with pytest.raises(syntax.SyntaxProblem, match=r"^553$"):
            syntax.mailbox(path, bad_reply="553")


@SOME
@given(st.text(max_size=300))
def test_a_helo_name_is_refused_unless_it_is_printable_text(name: str) -> None:
    printable = (
        bool(name)
        and len(name) <= 255
        and all((" " <= c <= "~") or (c >= "\xa0" and not "\ud800" <= c <= "\udfff") for c in name)
    )
    try:
        assert syntax.helo_name(name, syntax_reply="501") == name
        assert printable
    except syntax.SyntaxProblem:
        assert not printable
