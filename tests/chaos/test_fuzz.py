"""Fuzzing (issue 10): Hypothesis writes SMTP sessions and control API calls, and a running
Empath (processes, as deployed) must answer each as a server should.

SMTP: random commands, parameters, addresses, bytes and line endings, pipelined, sometimes
abandoned mid-command or mid-DATA. Every reply is a proper reply; a 5xx is one of the codes for
malformed input or policy (never a crash shown as a 500); the ingress log has no traceback; and
every session, even one its client left open and silent, is ended by the server within its
deadlines, so nobody keeps a connection slot for ever.

Control: random methods, paths (from the service's own OpenAPI document), parameters, bodies
and tokens: never a 500, no traceback in its log.

`FUZZ_EXAMPLES` sets the examples per test: a few hundred, derandomized, in CI (seconds);
`make fuzz` runs many more, each run with new random ones.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import socket
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import fleet

LONG_RUN = "FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Examples take milliseconds, and the abandoned sessions seconds at the end.
pytestmark = pytest.mark.timeout(120 + EXAMPLES / 10)
# Sessions left open and silent, checked at the end: each must be ended by the server.
MOST_LEFT_OPEN = 60

# -- SMTP ------------------------------------------------------------------------------------

VERBS = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"QUIT",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"BDAT 10 LAST",
    b"ehlo",
    b"mail from:",
]
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"", b"\x00\r\n"]
PARAMETERS = [
    b"SIZE=100",
    b"SIZE=99999999999",
    b"SIZE=-1",
    b"BODY=8BITMIME",
    b"BODY=7BIT",
    b"BODY=BINARYMIME",
    b"SMTPUTF8",
    b"RET=FULL",
    b"RET=HDRS",
    b"RET=",
    b"ENVID=x+2Bz",
    b"NOTIFY=SUCCESS,FAILURE",
    b"NOTIFY=NEVER,DELAY",
    b"ORCPT=rfc822;a@dest.test",
    b"ORCPT=rfc822;\xff",
    b"AUTH=<>",
    b"X=Y",
]
locals_ = st.one_of(
    st.sampled_from(
        [b"u", b"u", b"u", b"postmaster", "jörg".encode(), b"\xff\xfe", b'"a b"', b"a.", b""]
    ),
    st.binary(max_size=20),
)
domains = st.one_of(
    st.sampled_from(
        [
            b"dest.test",
            b"example.com",
            b"other.org",
            b"[127.0.0.1]",
            b"d\x00.test",
            "ü.test".encode(),
        ]
    ),
    st.binary(max_size=20),
)
paths = st.one_of(
    st.sampled_from([b"<u@dest.test>", b"<a@sender.test>", "<jörg@dest.test>".encode(), b"<>"]),
    st.builds(lambda lp, d: b"<" + lp + b"@" + d + b">", locals_, domains),
    st.builds(lambda lp, d: lp + b"@" + d, locals_, domains),
    st.binary(max_size=40),
)
parameters = st.lists(st.one_of(st.sampled_from(PARAMETERS), st.binary(max_size=12)), max_size=3)
commands = st.one_of(
    st.builds(
        lambda verb, arg, params: b" ".join([verb + arg, *params]),
        st.sampled_from(VERBS),
        st.one_of(paths, st.sampled_from([b" client.test", b"", b" \x1b[2J"])),
        parameters,
    ),
    st.binary(max_size=600),
)
bodies = st.builds(
    lambda lines, end: b"\r\n".join(lines) + end,
    st.lists(st.one_of(st.sampled_from([b".", b"..", b"Subject: x", b""]), st.binary(max_size=80))),
    st.sampled_from([b"\r\n.\r\n", b"\n.\n", b"\r\n", b""]),
)
steps = st.one_of(
    st.tuples(commands, st.sampled_from(ENDINGS)),
    st.tuples(bodies, st.just(b"")),
)
# A whole transaction, each part of it possibly wrong: these reach the deeper states (RCPT,
# DATA, queueing) that random lines seldom do.
transactions = st.builds(
    lambda hello, sender, recipients, data, tail: [hello, sender, *recipients, *data, *tail],
    st.sampled_from([(b"EHLO client.test", b"\r\n"), (b"HELO client.test", b"\r\n")]),
    st.tuples(
        st.builds(lambda p, ps: b" ".join([b"MAIL FROM:" + p, *ps]), paths, parameters),
        st.sampled_from(ENDINGS),
    ),
    st.lists(
        st.tuples(
            st.builds(lambda p, ps: b" ".join([b"RCPT TO:" + p, *ps]), paths, parameters),
            st.sampled_from(ENDINGS),
        ),
        min_size=1,
        max_size=3,
    ),
    st.tuples(st.just((b"DATA", b"\r\n")), st.tuples(bodies, st.just(b""))),
    st.lists(steps, max_size=3),
)
sessions = st.one_of(st.lists(steps, min_size=1, max_size=12), transactions)

REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")
# The 5xx replies a client's own mistake may earn: syntax (5.5.x), an address (5.1.x, 5.6.7),
# a size (5.3.4), relaying (5.7.1), AUTH/TLS required (5.7.0). Anything else, such as a bare
# "554 5.0.0" or an error's text, is a server failure shown to the client.
RIGHT_5XX = re.compile(
    rb"^(50[0-4] 5\.5\.\d|55[03] 5\.1\.\d|553 5\.6\.7|552 5\.3\.4|554 5\.7\.1|530 5\.7\.0"
    rb"|555 5\.5\.4|550 5\.1\.1|535 5\.7\.8|538 5\.7\.11)\b"
)


def check_replies(received: bytes) -> set[str]:
    """Every line a reply line; every 5xx one for the client's mistake; no error's text. The
    codes seen."""
    codes: set[str] = set()
    for line in received.split(b"\r\n"):
        if not line:
            continue
        match = REPLY.match(line)
        assert match, f"not an SMTP reply line: {line!r}"
        code = match.group(1)
        codes.add(code.decode())
        assert code[:1] in b"2345", line
        if code.startswith(b"5"):
            assert RIGHT_5XX.match(line), f"a 5xx that is no answer to bad input: {line!r}"
        assert b"Error: (" not in line, line
        assert b"Traceback" not in line, line
    return codes


def read_to_end(sock: socket.socket, *, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the session longer."""
    sock.settimeout(within)
    received = bytearray()
    deadline = time.monotonic() + within
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"the server kept the session open over {within}s; it sent {bytes(received)!r}"
            ) from None
        except ConnectionResetError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def test_fuzzed_smtp_sessions_get_proper_replies_and_every_session_ends(
    fuzz_target: fleet.Target,
) -> None:
    ingress = fuzz_target.services["ingress"]
    config = fuzz_target.config
    # The longest a session may live after its client's last byte: a command's timeout, or the
    # whole of DATA; and a margin for a busy machine.
    lifetime = max(config.smtp_command_timeout, config.smtp_data_deadline) + 10
    left_open: list[tuple[socket.socket, float]] = []
    seen: collections.Counter[str] = collections.Counter()  # sessions with each reply code

    @FUZZ
    @given(session=sessions, abandon=st.integers(0, 9))
    def one(session: list[tuple[bytes, bytes]], abandon: int) -> None:
        sock = socket.create_connection(("127.0.0.1", fuzz_target.smtp_port), timeout=10)
        # The server may end the session before all is sent (QUIT, 421 after too many errors).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"".join(text + ending for text, ending in session))
        if abandon == 0 and len(left_open) < MOST_LEFT_OPEN:
            # Left open and silent, mid-command or mid-DATA: checked at the end.
            left_open.append((sock, time.monotonic()))
            return
        try:
            with_eof = True
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                with_eof = False
            codes = check_replies(read_to_end(sock, within=lifetime if with_eof else 10))
            seen.update(codes)
            for code in sorted(codes):
                event(f"reply {code}")
        finally:
            sock.close()

    one()
    for sock, since in left_open:
        try:
            within = max(0.5, lifetime - (time.monotonic() - since))
            seen.update(check_replies(read_to_end(sock, within=within)))
        finally:
            sock.close()
    print(f"SMTP sessions by reply code: {dict(sorted(seen.items()))}")
    assert ingress.alive
    assert "Traceback" not in ingress.output(), ingress.output()[-5000:]


# -- control API -------------------------------------------------------------------------------

jsons = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
segments = st.one_of(
    st.sampled_from(["dest.test", "01KJP5Z4M0ABCDEFGHJKMNPQRS", "a" * 300, "..", "%00", "x y"]),
    st.text(max_size=30),
)


def routes(base: str) -> list[tuple[str, str]]:
    """The methods and paths the control service documents (its OpenAPI document)."""
    answer = httpx.get(
        f"{base}/openapi.json", headers={"Authorization": f"Bearer {fleet.TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "delete", "patch"}
    ]


def test_fuzzed_control_calls_never_get_a_500_nor_log_a_traceback(
    fuzz_target: fleet.Target,
) -> None:
    control = fuzz_target.services["control"]
    base = fuzz_target.control_url
    documented = routes(base)
    statuses: collections.Counter[int] = collections.Counter()
    assert documented

    def fill(path: str, values: list[str]) -> str:
        for value in values:
            path = re.sub(r"\{[^}]+\}", lambda _, v=value: quote(v, safe=""), path, count=1)
        return re.sub(r"\{[^}]+\}", "x", path)

    call = st.fixed_dictionaries(
        {
            "route": st.sampled_from(documented),
            "method": st.one_of(st.none(), st.sampled_from(["GET", "POST", "PUT", "DELETE"])),
            "values": st.lists(segments, max_size=3),
            "params": st.dictionaries(
                st.sampled_from(["state", "limit", "after", "domain", "body", "r", "sort", "x"]),
                st.one_of(st.text(max_size=20), st.sampled_from(["-1", "0", "1e9", "yes"])),
                max_size=3,
            ),
            "body": st.one_of(
                st.none(),
                jsons.map(lambda v: json.dumps(v).encode()),
                st.binary(max_size=200),
                st.just(b"[" * 100_000),
            ),
            "token": st.sampled_from([fleet.TOKEN, fleet.TOKEN, fleet.TOKEN, None, "wrong"]),
        }
    )

    with httpx.Client(base_url=base, timeout=30) as http:

        @FUZZ
        @given(request=call)
        def one(request: dict[str, Any]) -> None:
            method, path = request["route"]
            headers = {"Authorization": f"Bearer {request['token']}"} if request["token"] else {}
            if request["body"] is not None:
                headers["Content-Type"] = "application/json"
            answer = http.request(
                request["method"] or method,
                fill(path, request["values"]),
                params=request["params"],
                content=request["body"],
                headers=headers,
            )
            event(f"status {answer.status_code}")
            statuses[answer.status_code] += 1
            assert answer.status_code != 500, (request, answer.status_code, answer.text[:500])
            assert answer.status_code < 600

        one()
    print(f"control calls by status: {dict(sorted(statuses.items()))}")
    assert control.alive
    assert "Traceback" not in control.output(), control.output()[-5000:]
