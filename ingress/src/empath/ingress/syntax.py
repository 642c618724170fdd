"""The syntax of SMTP envelopes: paths (RFC 5321 §4.1.2) and ESMTP parameters.

MAIL takes SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID (RFC 3461) and AUTH
(RFC 4954); RCPT takes NOTIFY/ORCPT (RFC 3461). Values that RFC 3461 defines as xtext keep
their case and encoding: they go back out unchanged in DSNs and on relayed transactions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from empath.core import errors
from empath.ingress import replies

# RFC 6531's UTF8-non-ascii, less what can never be text: the C1 controls, and the surrogates
# that stand for bytes that are not UTF-8 (aiosmtpd decodes with surrogateescape). An address
# goes into headers, logs and JSON events, where either would do harm or fail.
_UTF8 = r"\xa0-\ud7ff\ue000-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8}]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LET_DIG = rf"[A-Za-z0-9{_UTF8}]"
_LABEL = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_UTF8}]{{0,61}}{_LET_DIG})?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_LITERAL = r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]+)\]"
_MAILBOX = re.compile(rf"^(?P<local>{_DOT_ATOM}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})\Z")
_ROUTE = re.compile(rf"^@{_DOMAIN}(?:,@{_DOMAIN})*:")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_PARAM = re.compile(
    rf"^(?P<name>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e{_UTF8}]+))?\Z"
)

_DIGITS = re.compile(r"[0-9]+\Z")  # not str.isdigit: "²" and "٣" are digits to Python
# A HELO/EHLO name goes into the `Received:` header and the logs: printable text only, so no
# CR, LF, NUL or other control character (a bare CR would become a header line downstream).
_HELO = re.compile(rf"[\x20-\x7e{_UTF8}]{{1,255}}\Z")
_UNPRINTABLE = re.compile(rf"[^\x20-\x7e{_UTF8}]")

MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


class SyntaxProblem(errors.PermanentError):
    """The envelope command is malformed; `reply` (a 5xx) is what to answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailParameters:
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParameters:
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


def helo_name(argument: str | None, *, syntax_reply: str) -> str:
    """The client's name from HELO/EHLO, if it is printable text (RFC 5321 §4.1.1.1)."""
    if argument is None or not _HELO.match(argument):
        raise SyntaxProblem(syntax_reply)
    return argument


def printable(text: str) -> str:
    """`text` with anything unprintable (controls, undecodable bytes) shown as `?`: for values
    that reach a header or a log line and were not checked on the way in."""
    return _UNPRINTABLE.sub("?", text)


def split_path(argument: str, keyword: str, *, syntax_reply: str) -> tuple[str, list[str]]:
    """`FROM:<a@b> SIZE=1` -> (`<a@b>` contents, [`SIZE=1`]); tolerates a space after ':'."""
    if argument[: len(keyword)].upper() != keyword:
        raise SyntaxProblem(syntax_reply)
    rest = argument[len(keyword) :].lstrip()
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            raise SyntaxProblem(syntax_reply)
        path, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail.startswith(" "):
            raise SyntaxProblem(syntax_reply)
    else:  # lenient: a bare address, as many clients send
        path, _, tail = rest.partition(" ")
        if not path:
            raise SyntaxProblem(syntax_reply)
    # RFC 5321 §4.1.2: parameters are separated by SP only (an RFC 6533 ORCPT may hold other
    # Unicode spaces); a run of spaces is tolerated.
    return path, [token for token in tail.split(" ") if token]


def _closing_bracket(text: str) -> int:
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def mailbox(path: str, *, bad_reply: str) -> str:
    """Validate a path's mailbox (dropping any obsolete source route)."""
    path = _ROUTE.sub("", path, count=1)
    if len(path) > MAX_PATH or not _MAILBOX.match(path):
        raise SyntaxProblem(bad_reply)
    return path


def _parameters(tokens: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for token in tokens:
        match = _PARAM.match(token)
        if match is None:
            raise SyntaxProblem(replies.BAD_PARAMETER.format(name=token.partition("=")[0]))
        name = match["name"].upper()
        if name in found:
            raise SyntaxProblem(replies.DUPLICATE_PARAMETER.format(name=name))
        found[name] = match["value"]
    return found


def _xtext(name: str, value: str | None, *, limit: int) -> str:
    if value is None or len(value) > limit or not _XTEXT.match(value):
        raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
    return value


def mail_parameters(tokens: list[str]) -> MailParameters:
    params = _parameters(tokens)
    size = body = ret = envid = None
    smtputf8 = False
    for name, value in params.items():
        if name == "SIZE":
            if value is None or not _DIGITS.match(value) or len(value) > 20:
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
            size = int(value)
        elif name == "BODY":
            body = (value or "").upper()
            if body not in {"7BIT", "8BITMIME"}:
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
        elif name == "SMTPUTF8":
            if value is not None:
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
            smtputf8 = True
        elif name == "RET":
            ret = (value or "").upper()
            if ret not in {"FULL", "HDRS"}:
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
        elif name == "ENVID":
            envid = _xtext(name, value, limit=100)
        elif name == "AUTH":
            _xtext(name, value, limit=500)  # RFC 4954 §5: accepted, not trusted
        else:
            raise SyntaxProblem(replies.UNKNOWN_PARAMETER.format(name=name))
    return MailParameters(size=size, body=body or "7BIT", smtputf8=smtputf8, ret=ret, envid=envid)


def rcpt_parameters(tokens: list[str]) -> RcptParameters:
    params = _parameters(tokens)
    notify: tuple[str, ...] | None = None
    orcpt = None
    for name, value in params.items():
        if name == "NOTIFY":
            notify = tuple((value or "").upper().split(","))
            allowed = {"SUCCESS", "FAILURE", "DELAY"}
            if notify != ("NEVER",) and (
                not set(notify) <= allowed or len(set(notify)) != len(notify)
            ):
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
        elif name == "ORCPT":
            addr_type, semicolon, text = (value or "").partition(";")
            if not semicolon or not re.match(r"^[A-Za-z0-9][A-Za-z0-9\-]*\Z", addr_type):
                raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
            if addr_type.lower() == "utf-8":  # RFC 6533 utf-8-addr-xtext: any non-control text
                if any(ord(c) < 0x21 for c in text) or len(text) > 500:
                    raise SyntaxProblem(replies.BAD_PARAMETER.format(name=name))
            else:
                _xtext(name, text, limit=500)
            orcpt = f"{addr_type};{text}"
        else:
            raise SyntaxProblem(replies.UNKNOWN_PARAMETER.format(name=name))
    return RcptParameters(notify=notify, orcpt=orcpt)
