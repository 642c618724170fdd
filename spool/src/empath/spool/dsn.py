"""Delivery status notifications (RFC 3464): bounces, delay warnings and success notices.

A DSN is an ordinary message from the null sender to the original envelope sender, queued and
delivered like any other. Its three parts: a note for people, the machine-readable
`message/delivery-status`, and the original message (RET=FULL) or its headers (RET=HDRS).
When the original is lost (its body gone from the bucket), the DSN says so and has no third
part (RFC 3462 makes it optional): the sender still learns the message was not delivered.
The original is attached byte for byte, which is why the MIME is written here and not by
`email.generator` (it would re-fold and re-encode what it re-parses).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid

from empath.core import queue, store

FULL_LIMIT = 256 * 1024  # without RET, return the whole message up to this size
# The most of a message read to return its headers (RET=HDRS, or a large one without RET).
HEAD_LIMIT = store.HEAD_LIMIT

ACTIONS = {
    "failure": ("failed", "Undelivered Mail Returned to Sender"),
    "delay": ("delayed", "Delayed Mail (still being retried)"),
    "success": ("relayed", "Successful Mail Delivery Report"),
}

NOTES = {
    "failure": (
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n"
    ),
    "delay": (
        "Your message could not be delivered yet to one or more recipients.\r\n"
        "Delivery will be tried again; you do not need to send it again.\r\n"
    ),
    "success": (
        "Your message was handed on to the next mail server for these recipients,\r\n"
        "which does not send delivery notifications itself.\r\n"
    ),
}


MISSING_NOTE = (
    "The original message cannot be returned with this report:\r\nits stored copy was lost.\r\n"
)


@dataclass(frozen=True, slots=True)
class Report:
    """One recipient in a DSN."""

    recipient: queue.RecipientState
    status: str  # enhanced status code, e.g. 5.1.1
    diagnostic: str | None  # the remote reply, when there was one
    remote: str | None


def wanted(recipient: queue.RecipientState, kind: str) -> bool:
    """Whether the recipient's NOTIFY asks for this kind of DSN (RFC 3461 §4.1).

    Without NOTIFY: failures only. NEVER: nothing.
    """
    notify = recipient.notify
    if notify is None:
        return kind == "failure"
    return kind.upper() in notify


def status_of(reply: str | None, *, default: str) -> str:
    """The enhanced status code in a reply like `550 5.1.1 No such user`."""
    if reply:
        parts = reply.split()
        if len(parts) > 1 and parts[1].count(".") == 2 and parts[1][0] in "245":
            return parts[1]
    return default


def headers_only(entry: queue.Entry) -> bool:
    """Whether a DSN about `entry` returns only the headers of the original (RET=HDRS, or no
    RET and a message over `FULL_LIMIT`): then `HEAD_LIMIT` bytes of it are all it needs."""
    return entry.ret == "HDRS" or (entry.ret is None and entry.size > FULL_LIMIT)


def build(
    *,
    kind: str,
    entry: queue.Entry,
    reports: list[Report],
    original: bytes | None,
    hostname: str,
    now: datetime,
    retry_until: datetime | None = None,
) -> bytes:
    """The whole DSN message, ready to queue; `original` is None when the body is lost, and
    may be only its first bytes when `headers_only(entry)`."""
    action, subject = ACTIONS[kind]
    boundary = f"{secrets.token_hex(12)}/{hostname}"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.sender}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    note = (
        NOTES[kind]
        + "\r\n"
        + "".join(f"<{r.recipient.address}>: {r.diagnostic or r.status}\r\n" for r in reports)
        + ("" if original is not None else "\r\n" + MISSING_NOTE)
    )
    per_message = [f"Reporting-MTA: dns; {hostname}"]
    if entry.envid:
        per_message.append(f"Original-Envelope-Id: {entry.envid}")
    per_message.append(f"Arrival-Date: {format_datetime(entry.received_at)}")
    blocks = ["\r\n".join(per_message)]
    for report in reports:
        lines = []
        if report.recipient.orcpt:
            lines.append(f"Original-Recipient: {report.recipient.orcpt}")
        lines += [
            f"Final-Recipient: rfc822; {report.recipient.address}",
            f"Action: {action}",
            f"Status: {report.status}",
        ]
        if report.remote:
            lines.append(f"Remote-MTA: dns; {report.remote}")
        if report.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {report.diagnostic}")
        lines.append(f"Last-Attempt-Date: {format_datetime(now)}")
        if kind == "delay" and retry_until is not None:
            lines.append(f"Will-Retry-Until: {format_datetime(retry_until)}")
        blocks.append("\r\n".join(lines))
    text = (
        "\r\n".join(headers) + "\r\n\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{note}\r\n"
        f"--{boundary}\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n" + "\r\n\r\n".join(blocks) + "\r\n\r\n"
    ).encode("utf-8")
    if original is None:
        return text + f"--{boundary}--\r\n".encode()
    if not headers_only(entry):
        returned_type, returned = "message/rfc822", original
    else:
        head, blank, _ = original[:HEAD_LIMIT].partition(b"\r\n\r\n")
        if not blank:  # headers longer than HEAD_LIMIT: up to the last whole line
            head = head.rpartition(b"\r\n")[0] or head
        returned_type, returned = "text/rfc822-headers", head + b"\r\n"
    text += (
        f"--{boundary}\r\n"
        f"Content-Description: {'Undelivered message' if kind == 'failure' else 'Message'}\r\n"
        f"Content-Type: {returned_type}\r\n\r\n"
    ).encode()
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return text + returned + f"\r\n--{boundary}--\r\n".encode()
