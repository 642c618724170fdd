"""DSNs as a sender's mail program reads them: RFC 3464 reports with the original attached."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta
from email.message import EmailMessage, Message

import pytest

from empath.spool import dsn
from tests.unit.spool.samples import NOW, ORIGINAL, entry, recipient

FAILED = "550 5.1.1 <bob@example.com>: No such user"


def report(address: str = "bob@example.com", **fields: object) -> dsn.Report:
    values: dict[str, object] = {
        "recipient": recipient(address),
        "status": "5.1.1",
        "diagnostic": FAILED,
        "remote": "mx1.example.com",
    }
    values.update(fields)
    return dsn.Report(**values)  # type: ignore[arg-type]


def build(kind: str = "failure", *, original: bytes | None = ORIGINAL, **options: object) -> bytes:
    reports = options.pop("reports", [report()])
    return dsn.build(
        kind=kind,
        entry=options.pop("entry", entry()),  # type: ignore[arg-type]
        reports=reports,  # type: ignore[arg-type]
        original=original,
        hostname="mx.test",
        now=NOW,
        **options,  # type: ignore[arg-type]
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(raw: bytes) -> list[Message]:
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    payload = message.get_payload()
    assert isinstance(payload, list)
    return payload


def status_blocks(raw: bytes) -> list[Message]:
    """The per-message block, then one block per recipient."""
    blocks = parts(raw)[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def test_a_bounce_is_a_report_with_a_note_the_status_and_the_whole_message() -> None:
    raw = build()
    message = parse(raw)

    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mx.test>"
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Auto-Submitted"] == "auto-replied"
    note, status, returned = parts(raw)
    assert note.get_content_type() == "text/plain"
    assert "<bob@example.com>: " + FAILED in note.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/rfc822"
    per_message, per_recipient = status_blocks(raw)
    assert per_message["Reporting-MTA"] == "dns; mx.test"
    assert per_message["Original-Envelope-Id"] is None
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.com"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx1.example.com"
    assert per_recipient["Diagnostic-Code"] == f"smtp; {FAILED}"
    assert per_recipient["Original-Recipient"] is None
    assert per_recipient["Will-Retry-Until"] is None


def test_the_original_is_attached_byte_for_byte() -> None:
    raw = build()

    assert b"Content-Type: message/rfc822\r\n\r\n" + ORIGINAL in raw


def test_every_line_of_a_dsn_ends_in_crlf() -> None:
    raw = build(original=ORIGINAL)

    assert re.search(rb"(?<!\r)\n", raw) is None
    assert raw.endswith(b"--\r\n")


def test_a_bounce_for_a_lost_body_says_so_and_has_no_original_part() -> None:
    lost = "554 5.3.0 The message body is missing from the spool"

    raw = build(original=None, reports=[report(status="5.3.0", diagnostic=lost)])

    note, status = parts(raw)
    assert status.get_content_type() == "message/delivery-status"
    text = note.get_payload()
    assert "<bob@example.com>: " + lost in text
    assert "cannot be returned with this report" in text
    assert "its stored copy was lost" in text
    assert status_blocks(raw)[1]["Status"] == "5.3.0"
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert raw.endswith(b"--\r\n")


def test_ret_hdrs_returns_only_the_headers() -> None:
    raw = build(entry=entry(ret="HDRS"))

    returned = parts(raw)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Message-ID: <plan@example.org>\r\n\r\n--" in raw
    assert b"Line one." not in raw


def test_without_ret_a_message_over_the_size_limit_returns_its_headers_only() -> None:
    big = ORIGINAL + b"x" * dsn.FULL_LIMIT + b"\r\n"
    at_limit = ORIGINAL + b"x" * (dsn.FULL_LIMIT - len(ORIGINAL) - 2) + b"\r\n"
    assert len(at_limit) == dsn.FULL_LIMIT

    def sized(original: bytes) -> bytes:
        return build(original=original, entry=entry(size=len(original)))

    assert parts(sized(big))[2].get_content_type() == "text/rfc822-headers"
    assert len(sized(big)) < dsn.FULL_LIMIT
    assert parts(sized(at_limit))[2].get_content_type() == "message/rfc822"
    # What the spool reads of it then: its first HEAD_LIMIT bytes, which hold the headers.
    head = big[: dsn.HEAD_LIMIT]
    assert parts(build(original=head, entry=entry(size=len(big))))[2].as_bytes() == (
        parts(sized(big))[2].as_bytes()
    )


def test_headers_longer_than_what_is_read_are_returned_up_to_their_last_whole_line() -> None:
    headers = b"".join(b"X-Filler-%06d: %s\r\n" % (n, b"y" * 60) for n in range(5000))
    original = headers + b"\r\nbody\r\n"
    assert len(headers) > dsn.HEAD_LIMIT
    raw = build(original=original[: dsn.HEAD_LIMIT], entry=entry(ret="HDRS", size=len(original)))

    returned = parts(raw)[2].as_bytes()
    assert b"X-Filler-000000: " in returned
    last = raw.split(b"text/rfc822-headers\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    assert re.fullmatch(rb"(X-Filler-\d{6}: y{60}\r\n)+", last) is not None


def test_ret_full_returns_the_whole_message_whatever_its_size() -> None:
    big = ORIGINAL + b"x" * dsn.FULL_LIMIT + b"\r\n"

    raw = build(original=big, entry=entry(ret="FULL"))

    assert parts(raw)[2].get_content_type() == "message/rfc822"
    assert big in raw


def test_envid_and_orcpt_are_carried_into_the_report() -> None:
    orcpt = "rfc822;Bob+2BLists@Example.COM"
    raw = build(
        entry=entry(envid="QQ+2B314159"),
        reports=[report(recipient=recipient("bob@example.com", orcpt=orcpt))],
    )

    per_message, per_recipient = status_blocks(raw)
    assert per_message["Original-Envelope-Id"] == "QQ+2B314159"
    assert per_recipient["Original-Recipient"] == orcpt
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.com"


def test_one_report_lists_every_recipient_it_is_about() -> None:
    raw = build(
        reports=[report("bob@example.com"), report("carol@example.net", remote=None)],
    )

    _, bob, carol = status_blocks(raw)
    assert bob["Final-Recipient"] == "rfc822; bob@example.com"
    assert carol["Final-Recipient"] == "rfc822; carol@example.net"
    assert carol["Remote-MTA"] is None


@pytest.mark.parametrize(
    ("kind", "subject", "action", "description"),
    [
        ("failure", "Undelivered Mail Returned to Sender", "failed", "Undelivered message"),
        ("delay", "Delayed Mail (still being retried)", "delayed", "Message"),
        ("success", "Successful Mail Delivery Report", "relayed", "Message"),
    ],
)
def test_failure_delay_and_success_notices_say_what_happened(
    kind: str, subject: str, action: str, description: str
) -> None:
    until = NOW + timedelta(days=4)
    raw = build(kind, retry_until=until)

    assert parse(raw)["Subject"] == subject
    _, per_recipient = status_blocks(raw)
    assert per_recipient["Action"] == action
    assert parts(raw)[2]["Content-Description"] == description
    # Only a delay tells how long the retries go on.
    assert (per_recipient["Will-Retry-Until"] is not None) is (kind == "delay")


def test_the_delay_notice_says_until_when_it_retries() -> None:
    raw = build("delay", retry_until=NOW + timedelta(days=5))

    _, per_recipient = status_blocks(raw)
    assert per_recipient["Will-Retry-Until"] == "Sat, 07 Mar 2026 12:00:00 +0000"


@pytest.mark.parametrize(
    ("notify", "failure", "delay", "success"),
    [
        (None, True, False, False),
        (("NEVER",), False, False, False),
        (("SUCCESS",), False, False, True),
        (("DELAY", "FAILURE"), True, True, False),
        (("SUCCESS", "FAILURE", "DELAY"), True, True, True),
    ],
)
def test_notify_decides_which_dsns_a_recipient_gets(
    notify: tuple[str, ...] | None, failure: bool, delay: bool, success: bool
) -> None:
    who = recipient("bob@example.com", notify=notify)

    assert [dsn.wanted(who, kind) for kind in ("failure", "delay", "success")] == [
        failure,
        delay,
        success,
    ]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("550 5.1.1 No such user", "5.1.1"),
        ("452 4.2.2 Mailbox full", "4.2.2"),
        ("250 2.0.0 Ok", "2.0.0"),
        ("550 No such user", "9.9.9"),
        ("550 1.2.3 not an enhanced code", "9.9.9"),
        ("550 5.1 too short", "9.9.9"),
        ("550", "9.9.9"),
        ("", "9.9.9"),
        (None, "9.9.9"),
    ],
)
def test_the_status_comes_from_the_replys_enhanced_code(reply: str | None, status: str) -> None:
    assert dsn.status_of(reply, default="9.9.9") == status
