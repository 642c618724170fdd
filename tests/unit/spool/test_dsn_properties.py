"""Properties of the DSN fields that come from the envelope: an ENVID or ORCPT that a client
encoded as xtext (RFC 3461 §4) is accepted by ingress and comes back in the DSN so that
decoding it gives what the client encoded."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from empath.ingress import syntax
from empath.spool import dsn
from tests.unit.spool.samples import NOW, entry, recipient

SOME = settings(max_examples=200)
XCHARS = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}


def xtext_encode(data: bytes) -> str:
    """RFC 3461 §4: "!" to "~" as themselves, except "+" and "="; anything else as +XX."""
    return "".join(chr(b) if b in XCHARS else f"+{b:02X}" for b in data)


def xtext_decode(text: str) -> bytes:
    return re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("ascii"))


def field(raw: bytes, name: str) -> str:
    """The value of a field of the delivery-status part, as a DSN reader finds it."""
    found = re.findall(rb"^" + name.encode() + rb": (.*)\r$", raw, flags=re.MULTILINE)
    assert len(found) == 1, f"{name}: {found}"
    return str(found[0].decode("utf-8"))


def failure_about(**fields: object) -> bytes:
    who = recipient("bob@example.com", orcpt=fields.pop("orcpt", None))
    return dsn.build(
        kind="failure",
        entry=entry(who, **fields),
        reports=[dsn.Report(who, "5.1.1", "550 5.1.1 No such user", "mx.example.com")],
        original=b"Subject: x\r\n\r\nbody\r\n",
        hostname="mx.test",
        now=NOW,
    )


@SOME
@given(st.binary(min_size=1, max_size=33))
def test_an_envid_comes_back_in_the_dsn_as_the_client_encoded_it(envid: bytes) -> None:
    encoded = xtext_encode(envid)
    accepted = syntax.mail_parameters([f"ENVID={encoded}"]).envid
    assert accepted == encoded

    raw = failure_about(envid=accepted)

    assert xtext_decode(field(raw, "Original-Envelope-Id")) == envid


@SOME
@given(st.binary(min_size=1, max_size=160))
def test_an_rfc822_orcpt_comes_back_in_the_dsn_as_the_client_encoded_it(address: bytes) -> None:
    orcpt = f"rfc822;{xtext_encode(address)}"
    accepted = syntax.rcpt_parameters([f"ORCPT={orcpt}"]).orcpt
    assert accepted == orcpt

    raw = failure_about(orcpt=accepted)

    kind, _, text = field(raw, "Original-Recipient").partition(";")
    assert kind == "rfc822"
    assert xtext_decode(text) == address


@SOME
@given(
    st.text(
        st.characters(min_codepoint=0x21, exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
        min_size=1,
        max_size=60,
    ).filter(lambda text: "=" not in text and len(text.split()) == 1)
)
def test_a_utf8_orcpt_comes_back_in_the_dsn_unchanged(address: str) -> None:
    accepted = syntax.rcpt_parameters([f"ORCPT=utf-8;{address}"]).orcpt
    assert accepted == f"utf-8;{address}"

    raw = failure_about(orcpt=accepted, smtputf8=True)

    assert field(raw, "Original-Recipient") == f"utf-8;{address}"
