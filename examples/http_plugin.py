"""A validation plugin over HTTP: copy this file to start your own.

Empath POSTs each hook's request as JSON (`core/schemas/plugin.<hook>.request.v1.json`) and
reads a verdict back (`plugin.verdict.v1.json`). This one refuses senders of blocked domains at
`mail`, tags every accepted recipient at `rcpt`, and stamps a header at `data`. It needs only
aiohttp, so it runs anywhere; declare it as a MailPlugin (`endpoint.url`) or in
`EMPATH_PLUGINS`:

    python examples/http_plugin.py --port 8080 --block spam.example
    EMPATH_PLUGINS='[{"name": "example", "hooks": ["mail", "rcpt", "data"],
                      "url": "http://127.0.0.1:8080/hook"}]'

With `--secret-file`, requests without the same secret in `X-Empath-Plugin-Secret` get 403
(give Empath the same file as the plugin's `secret_file`).
"""

from __future__ import annotations

import argparse
import hmac
from pathlib import Path
from typing import Any

from aiohttp import web

CONTINUE: dict[str, Any] = {"version": 1, "action": "continue"}


def verdict(request: dict[str, Any], blocked: set[str]) -> dict[str, Any]:
    """The answer to one hook's request."""
    hook = request["hook"]
    if hook == "mail":
        domain = request["sender"].rpartition("@")[2].lower()
        if domain in blocked:
            reply = {"code": 550, "enhanced": "5.7.1", "text": f"Mail from {domain} is refused"}
            return {"version": 1, "action": "refuse", "reply": reply}
    if hook == "rcpt":
        return {**CONTINUE, "metadata": {"example.checked": request["recipient"]}}
    if hook == "data":
        header = {"name": "X-Example-Checked", "value": f"yes; id={request['id']}"}
        return {**CONTINUE, "headers": [header]}
    return CONTINUE


def make_app(*, blocked: set[str], secret: str | None = None) -> web.Application:
    async def hook(http: web.Request) -> web.Response:
        given = http.headers.get("X-Empath-Plugin-Secret", "")
        if secret is not None and not hmac.compare_digest(given, secret):
            return web.json_response({"error": "wrong secret"}, status=403)
        return web.json_response(verdict(await http.json(), blocked))

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--block", action="append", default=[], help="a sender domain to refuse")
    parser.add_argument("--secret-file", type=Path)
    args = parser.parse_args()
    secret = args.secret_file.read_text().strip() if args.secret_file else None
    app = make_app(blocked={d.lower() for d in args.block}, secret=secret)
    # No access log: a line per call would cost more than the plugin's own work.
    web.run_app(app, host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
