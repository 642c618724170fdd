"""DKIM signing (RFC 6376) of mail from authenticated or trusted clients: a plugin at `data`.

An in-process plugin like any other (entry point `dkim`), made by its factory from the
declaration's `options`: a directory of private keys (a mounted Kubernetes Secret, say), and the
sender domains to sign for, each with its selector, its signing domain (`d=`) and its key
file. The sender domain is the one of the `From:` header, which DMARC aligns with `d=`. The
message must fit in the plugin's `body_limit` (the signature covers the body); a bigger one
goes on unsigned, with a warning in the log. dkimpy signs, with its choice of header fields.
Keys are read and checked once, at start: a missing or unreadable key stops ingress naming it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim
import dkim.crypto
from pydantic import BaseModel, ConfigDict, Field, field_validator

from empath.core import addresses, logs, plugins

log = logging.getLogger("empath.ingress.dkim")

SIGNATURE = "DKIM-Signature"
# RFC 8301: keys of fewer bits must not be used (verifiers refuse them).
MIN_KEY_BITS = 1024


class Signer(BaseModel):
    """How mail of one sender domain is signed (each field defaults from the options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: addresses.Domain | None = None
    domain: addresses.Domain | None = Field(
        default=None, description="d=; the sender domain (without a leading dot) by default."
    )
    key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,253}$",
        description="A file of key_directory; `<selector>.<domain>.pem` by default.",
    )


class Options(BaseModel):
    """The DKIM plugin's `options`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_directory: Path
    selector: addresses.Domain | None = Field(
        default=None, description="The selector of every domain that names none."
    )
    # Sender domain -> signer: `example.com` is that domain only, `.example.com` its subdomains.
    domains: dict[str, Signer] = Field(min_length=1)
    canonicalization: Literal[
        "relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"
    ] = "relaxed/relaxed"
    # Mail from clients in EMPATH_TRUSTED_NETWORKS is signed; authenticated clients' always.
    sign_trusted: bool = True

    @field_validator("domains")
    @classmethod
    def _sender_domains(cls, value: dict[str, Signer]) -> dict[str, Signer]:
        normal = {}
        for name, signer in value.items():
            domain = addresses.normal_domain(name)
            problem = addresses.domain_problem(domain.removeprefix("."))
            if problem is not None:
                raise ValueError(f"{name!r}: {problem}")
            normal[domain] = signer
        return normal


@dataclass(frozen=True, slots=True)
class Key:
    """A signer with its key read: what one sender domain's signature is made with."""

    domain: str
    selector: str
    private_key: bytes


def _read_key(path: Path) -> bytes:
    """A PEM private key file's content, checked the way dkimpy will read it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        parsed = dkim.crypto.parse_pem_private_key(data)
    except (dkim.crypto.UnparsableKeyError, ValueError, IndexError) as error:
        raise ValueError(f"{path} is no PEM RSA private key: {error}") from None
    bits = int(parsed["modulus"]).bit_length()
    if bits < MIN_KEY_BITS:
        raise ValueError(f"{path} is a {bits}-bit key; DKIM needs {MIN_KEY_BITS} bits or more")
    return data


def load_keys(options: Options) -> dict[str, Key]:
    """Sender domain -> its key, every key file read and checked (`ValueError` names it)."""
    if not options.key_directory.is_dir():
        raise ValueError(f"key_directory: no such directory: {options.key_directory}")
    keys = {}
    for sender, signer in options.domains.items():
        selector = signer.selector or options.selector
        if selector is None:
            raise ValueError(f"domains.{sender}: no selector (give one here or in `selector`)")
        domain = signer.domain or sender.removeprefix(".")
        path = options.key_directory / (signer.key or f"{selector}.{domain}.pem")
        try:
            keys[sender] = Key(domain=domain, selector=selector, private_key=_read_key(path))
        except ValueError as error:
            raise ValueError(f"domains.{sender}: {error}") from None
    return keys


def from_domain(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The domain of the message's one `From:` address (None: no From, several, or none)."""
    values = [value for name, value in headers if name.lower() == "from"]
    if len(values) != 1:
        return None
    found = [address for _, address in email.utils.getaddresses(values) if "@" in address]
    return addresses.domain_of(found[0]) if len(found) == 1 else None


class Signing:
    """The plugin: at `data`, a DKIM-Signature header for mail it should sign."""

    def __init__(self, options: Options, keys: dict[str, Key], *, body_limit: int) -> None:
        self.options = options
        self.keys = keys
        self.body_limit = body_limit
        header, body = options.canonicalization.split("/")
        self.canonicalize = (header.encode(), body.encode())

    def key_for(self, sender_domain: str) -> Key | None:
        """`example.com` matches itself; `.example.com` any of its subdomains."""
        if sender_domain in self.keys:
            return self.keys[sender_domain]
        labels = sender_domain.split(".")
        for start in range(1, len(labels)):
            parent = "." + ".".join(labels[start:])
            if parent in self.keys:
                return self.keys[parent]
        return None

    async def __call__(self, request: plugins.Request) -> plugins.Verdict | None:
        if not isinstance(request, plugins.DataRequest):
            return None
        session = request.session
        if session.authenticated_as is None and not (session.trusted and self.options.sign_trusted):
            return None
        about = logs.for_message(log, request.id)
        domain = from_domain(request.headers)
        key = self.key_for(domain) if domain is not None else None
        if key is None:
            about.debug("not signed: no key for the From: domain %s", domain)
            return None
        message = request.body()
        if message is None or request.body_truncated or request.size > self.body_limit:
            about.warning(
                "not signed: the message (%d bytes) is over the DKIM plugin's body_limit (%d)",
                request.size,
                self.body_limit,
            )
            return None
        # RSA in Python and hashing the body: off the event loop.
        signed = await asyncio.to_thread(
            dkim.sign,
            message,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key,
            canonicalize=self.canonicalize,
        )
        name, _, value = signed.decode("ascii").removesuffix("\r\n").partition(": ")
        assert name == SIGNATURE, name
        about.info("signed for d=%s s=%s", key.domain, key.selector)
        return plugins.Verdict(
            headers=(plugins.Header(name=SIGNATURE, value=value),),
            metadata={"dkim.domain": key.domain, "dkim.selector": key.selector},
        )


@plugins.factory
def plugin(setup: plugins.Setup) -> Signing:
    """The `dkim` plugin of a declaration: its options read and its keys loaded, or an error
    that stops ingress naming the plugin and the option."""
    options = setup.options(Options)
    if "data" not in setup.plugin.hooks:
        raise setup.error("the DKIM plugin signs at `data`: hooks must name it")
    if setup.plugin.body_limit == 0:
        raise setup.error(
            "body_limit: the DKIM signature covers the body; give the largest to sign"
        )
    try:
        keys = load_keys(options)
    except ValueError as error:
        raise setup.error(f"options.{error}") from None
    return Signing(options, keys, body_limit=setup.plugin.body_limit)
