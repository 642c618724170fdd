"""Every SMTP reply ingress sends, with its RFC 3463 enhanced status code.

Replies Empath writes itself are constants here. Replies aiosmtpd writes (syntax errors and
the like) get their enhanced code from `enhance`, by reply code, so every 2xx/4xx/5xx reply on
the wire carries one (RFC 2034 exempts only the greeting and the EHLO/HELO replies).
"""

from __future__ import annotations

import re

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
QUEUED = "250 2.0.0 Ok: queued as {id}"
VRFY = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"

SYNTAX_MAIL = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
SYNTAX_RCPT = "501 5.5.4 Syntax: RCPT TO:<address> [SP <rcpt-parameters>]"
SYNTAX_DATA = "501 5.5.4 Syntax: DATA"
SYNTAX_EHLO = "501 5.5.4 Syntax: EHLO hostname"
SYNTAX_HELO = "501 5.5.4 Syntax: HELO hostname"
BAD_SENDER = "553 5.1.7 Malformed sender address"
BAD_RECIPIENT = "553 5.1.3 Malformed recipient address"
NO_POSTMASTER = "550 5.1.1 <postmaster>: No postmaster mailbox is configured here"
NEED_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
UNKNOWN_PARAMETER = "555 5.5.4 Unsupported parameter: {name}"
BAD_PARAMETER = "501 5.5.4 Invalid value for parameter {name}"
DUPLICATE_PARAMETER = "501 5.5.4 Parameter {name} given twice"

RELAY_DENIED = "554 5.7.1 <{address}>: Relay access denied"
AUTH_UNAVAILABLE = "502 5.5.1 AUTH is not available here"
# A plugin with failurePolicy Fail did not answer (timeout, error): temporary, try later.
PLUGIN_FAILED = "451 4.7.1 Temporary policy failure, try again later"

SIZE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size ({limit})"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
DATA_LINE_TOO_LONG = "500 5.5.2 Line too long: a line of the message exceeds {limit} octets"

TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_IP = "421 4.7.0 {host} Too many connections from your address"
TOO_MANY_ERRORS = "421 4.7.0 {host} Too many errors, closing connection"
TIMEOUT = "421 4.4.2 {host} Timeout exceeded, closing connection"
SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down, try again later"
QUEUE_FAILED = "451 4.3.0 Temporary failure queueing the message, try again later"
ENVELOPE_TOO_BIG = "552 5.3.4 The envelope is too big to queue: send to fewer recipients at once"
INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"

# Enhanced codes for replies that arrive without one, by reply code.
_BY_CODE = {
    "211": "2.0.0",
    "214": "2.0.0",
    "220": "2.0.0",
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.2",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "455": "4.5.4",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "521": "5.3.2",
    "530": "5.7.0",
    "534": "5.7.9",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "551": "5.1.6",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
_REPLY = re.compile(r"^(?P<code>[245]\d\d)(?P<sep>[ -])(?P<text>.*)$", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


def enhance(line: str) -> str:
    """Give a reply line an enhanced status code when it has none (3xx lines have none)."""
    match = _REPLY.match(line)
    if match is None or _ENHANCED.match(match["text"]):
        return line
    code = match["code"]
    enhanced = _BY_CODE.get(code, f"{code[0]}.0.0")
    text = match["text"]
    return f"{code}{match['sep']}{enhanced} {text}" if text else f"{code}{match['sep']}{enhanced}"


def code_of(line: str) -> int:
    """The numeric reply code of a reply line (0 when it has none)."""
    head = line[:3]
    return int(head) if head.isdigit() else 0
