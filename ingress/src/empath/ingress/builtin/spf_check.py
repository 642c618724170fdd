"""SPF (RFC 7208) checks of incoming mail: a plugin at `mail` and `data`.

An in-process plugin like any other (entry point `spf`). At `mail` it evaluates the client's
address against the sender's domain (the HELO name for the null sender) with pyspf, over the
DNS servers delivery uses (`EMPATH_DNS_NAMESERVERS`, `EMPATH_DNS_TIMEOUT` per lookup), and
keeps the result in the message's metadata (`spf.result`, `spf.smtp.mailfrom` or
`spf.smtp.helo`); at `data` it adds `Authentication-Results` (RFC 8601) saying so. It may
refuse on `fail` (550 5.7.23) or defer on `temperror` (451 4.7.24), as RFC 7372 suggests, when
its options say so. Authenticated clients are not checked, nor (by default) trusted ones.

pyspf is blocking: a check runs in a thread of the plugin's own (at most `concurrency` at once)
and is bounded by `time_limit` as a whole; past it the result is `temperror`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import authres
import dns.exception
import dns.nameserver
import dns.resolver
import spf
from pydantic import BaseModel, ConfigDict, Field

from empath.core import addresses, logs, plugins
from empath.core.settings import Settings

log = logging.getLogger("empath.ingress.spf")

RESULT = "spf.result"
FAILED = plugins.Reply(code=550, enhanced="5.7.23", text="SPF validation failed")
DNS_ERROR = plugins.Reply(
    code=451, enhanced="4.7.24", text="SPF validation error (DNS), try again later"
)
# RFC 7208 §4.6.4: at least 20 seconds for a whole check; the plugin's timeout bounds it too.
DEFAULT_TIME_LIMIT = 20.0


class Options(BaseModel):
    """The SPF plugin's `options`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refuse_on_fail: bool = False
    defer_on_temperror: bool = False
    # Clients in EMPATH_TRUSTED_NETWORKS relay our own mail: checking them is off by default.
    check_trusted: bool = False
    # Seconds a whole check may take; by default 20, or less to end before the plugin's timeout.
    time_limit: float | None = Field(default=None, gt=0, le=300)
    # The authserv-id of Authentication-Results; EMPATH_HOSTNAME by default.
    authserv_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")


# pyspf looks names up through its module's `DNSLookup`; while a check of this plugin runs in
# a thread, that thread's resolver (over Empath's DNS settings) answers instead.
_local = threading.local()
_pyspf_lookup = spf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    """pyspf's lookup (`spf.DNSLookup_dnspython`'s answers) through the thread's resolver."""
    resolver: dns.resolver.Resolver | None = getattr(_local, "resolver", None)
    if resolver is None:
        return list(_pyspf_lookup(name, qtype, strict, timeout))
    try:
        answers = resolver.resolve(name, qtype, lifetime=min(timeout, _local.lookup_time))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as error:
        raise spf.TempError(f"DNS {error}") from error
    found: list[Any] = []
    for rdata in answers:
        if qtype in {"A", "AAAA"}:
            found.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            found.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            found.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in {"TXT", "SPF"}:
            found.append(((name, qtype), rdata.strings))
    return found


spf.DNSLookup = _lookup


def resolver(settings: Settings) -> dns.resolver.Resolver:
    """A blocking resolver over the DNS servers delivery uses (the system's when none)."""
    made = dns.resolver.Resolver(configure=not settings.dns_nameservers)
    if settings.dns_nameservers:
        made.nameservers = [
            dns.nameserver.Do53Nameserver(*addresses.parse_nameserver(server))
            for server in settings.dns_nameservers
        ]
    made.lifetime = settings.dns_timeout
    made.timeout = min(settings.dns_timeout, 2.0)
    return made


def client_address(ip: str) -> str:
    """The address SPF checks: an IPv4-mapped IPv6 address is the IPv4 one."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Check:
    """The plugin: evaluate at `mail`, report at `data`."""

    def __init__(
        self,
        options: Options,
        *,
        resolver: dns.resolver.Resolver,
        lookup_time: float,
        time_limit: float,
        deadline: float,
        authserv_id: str,
        threads: int,
    ) -> None:
        self.options = options
        self.resolver = resolver
        self.lookup_time = lookup_time
        self.time_limit = time_limit
        self.deadline = deadline
        self.authserv_id = authserv_id  # also the receiver of SPF's %{r} macro
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spf")

    async def __call__(self, request: plugins.Request) -> plugins.Verdict | None:
        if isinstance(request, plugins.MailRequest):
            return await self.check(request)
        if isinstance(request, plugins.DataRequest):
            return self.report(request)
        return None

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def check(self, request: plugins.MailRequest) -> plugins.Verdict | None:
        session = request.session
        if session.authenticated_as is not None or (
            session.trusted and not self.options.check_trusted
        ):
            return None
        helo = session.helo or ""
        identity = ("smtp.mailfrom", request.sender) if request.sender else ("smtp.helo", helo)
        result = await self.evaluate(client_address(session.client_ip), request.sender, helo)
        logs.for_message(log, session.id).info(
            "spf=%s %s=%s client %s", result, *identity, session.client_ip
        )
        metadata = {RESULT: result, f"spf.{identity[0]}": identity[1]}
        if result == "fail" and self.options.refuse_on_fail:
            return plugins.Verdict(action="refuse", reply=FAILED, metadata=metadata)
        if result == "temperror" and self.options.defer_on_temperror:
            return plugins.Verdict(action="refuse", reply=DNS_ERROR, metadata=metadata)
        return plugins.Verdict(metadata=metadata)

    async def evaluate(self, ip: str, sender: str, helo: str) -> str:
        """pass, fail, softfail, neutral, none, temperror or permerror (RFC 7208 §2.6)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.deadline):  # pyspf itself keeps to time_limit
                return await loop.run_in_executor(self._threads, self._evaluate, ip, sender, helo)
        except TimeoutError:
            return "temperror"

    def _evaluate(self, ip: str, sender: str, helo: str) -> str:
        _local.resolver, _local.lookup_time = self.resolver, self.lookup_time
        try:
            query = spf.query(
                i=ip, s=sender, h=helo, receiver=self.authserv_id, querytime=self.time_limit
            )
            result, _code, _explanation = query.check()
        finally:
            _local.resolver = None
        return str(result)

    def report(self, request: plugins.DataRequest) -> plugins.Verdict | None:
        """Authentication-Results for the result kept at `mail` (none: nothing checked)."""
        result = request.metadata.get(RESULT)
        if result is None:
            return None
        header = authres.AuthenticationResultsHeader(
            authserv_id=self.authserv_id,
            results=[
                authres.SPFAuthenticationResult(
                    result=result,
                    smtp_mailfrom=request.metadata.get("spf.smtp.mailfrom"),
                    smtp_helo=request.metadata.get("spf.smtp.helo"),
                )
            ],
        )
        name, _, value = str(header).partition(": ")
        return plugins.Verdict(headers=(plugins.Header(name=name, value=value),))


@plugins.factory
def plugin(setup: plugins.Setup) -> Check:
    """The `spf` plugin of a declaration, or an error naming the plugin and the option."""
    options = setup.options(Options)
    declared = setup.plugin
    missing = {"mail", "data"} - declared.validation_hooks
    if missing:
        raise setup.error(
            f"the SPF plugin checks at `mail` and reports at `data`: hooks lack "
            f"{', '.join(sorted(missing))}"
        )
    # Done before the plugin's timeout, so a slow DNS is a temperror, not a failed plugin.
    time_limit = options.time_limit or min(DEFAULT_TIME_LIMIT, declared.timeout * 0.8)
    if time_limit >= declared.timeout:
        raise setup.error(
            f"options.time_limit: {time_limit:g} s does not end before the plugin's timeout "
            f"({declared.timeout:g} s)"
        )
    settings = setup.settings
    return Check(
        options,
        resolver=resolver(settings),
        lookup_time=settings.dns_timeout,
        time_limit=time_limit,
        # Between pyspf's own limit and the plugin's timeout: a check stuck in a lookup that
        # pyspf cannot cut short still ends as temperror.
        deadline=(time_limit + declared.timeout) / 2,
        authserv_id=options.authserv_id or settings.hostname,
        threads=declared.concurrency,
    )
