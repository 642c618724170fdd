"""Settings shared by every service: environment variables `EMPATH_*`, optionally a YAML file.

The operator renders the same settings from a `MailServer` spec, so a setting means the same
thing wherever it comes from. A wrong value stops the service at start with a message that
names the setting (`load` turns pydantic's error into a `ConfigurationError`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from empath.core import addresses, errors, plugins

ENV_PREFIX = "EMPATH_"
# Settings renamed when their meaning changed (old name: new name); see `Settings._renamed`.
RENAMED = {
    "delivery_max_connections_per_domain": "delivery_destination_concurrency",
    "delivery_rate_per_domain": "delivery_rate_limit_default",
}
CONFIG_ENV = "EMPATH_CONFIG"
MiB = 1024 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TlsPolicy = Literal["none", "opportunistic", "verify", "required"]


def split_commas(value: Any) -> Any:
    """Environment variables hold lists as `a,b,c`; YAML files may hold real lists."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Plugin(BaseModel):
    """A plugin the services call at the given hooks (`EMPATH_PLUGINS`, a JSON list).

    The operator renders the MailPlugins a MailServer selects into this setting. A validation
    plugin (any of `plugins.HOOKS`) is reached by exactly one of `module` (in-process, an
    import path `pkg.mod:callable` or an entry point name of group `empath.plugins`), `url`
    (HTTP), `subject` (NATS request/reply) or `library` (a C module of the ancestor's, loaded
    by ingress with `arguments` for its `init`; `empath.ingress.cmodules`). An event plugin
    (only `plugins.EVENT_HOOKS`) needs none: naming its events makes the services publish
    them, and it reads them from the plugin events stream with a consumer of its own (ingress
    does so for a C module that is an event listener).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]{1,63}$")
    # Empty only for a C module: then the hooks it has callbacks for (see `event_hooks`).
    hooks: list[plugins.Hook | plugins.EventHook] = Field(default_factory=list)
    module: str | None = Field(default=None, min_length=1)
    url: str | None = Field(default=None, pattern=r"^https?://")
    subject: str | None = None
    library: Path | None = None
    arguments: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list, max_length=256
    )
    timeout: float = Field(default=5.0, gt=0, le=300)
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"
    priority: int = 100
    # At `data`: send the message itself, up to this many bytes (0: the headers only).
    body_limit: int = Field(default=0, ge=0, le=64 * MiB)
    # HTTP: CAs to verify an https:// plugin with, a file holding a shared secret sent in
    # `X-Empath-Plugin-Secret` (a mounted Secret), and calls in flight at once.
    ca_file: Path | None = None
    secret_file: Path | None = None
    concurrency: int = Field(default=64, ge=1, le=10000)
    # In process: a JSON object for a plugin factory (`plugins.factory`), which reads it into a
    # model of its own at start (the built-in DKIM and SPF plugins take their settings here).
    options: dict[str, Any] | None = None

    @field_validator("hooks", mode="before")
    @classmethod
    def _older_names(cls, value: Any) -> Any:
        """MailPlugins written for the first CRD say `helo` and `received`."""
        older = {"helo": "ehlo", "received": "message_received"}
        if isinstance(value, list):
            return [older.get(hook, hook) if isinstance(hook, str) else hook for hook in value]
        return value

    @property
    def validation_hooks(self) -> set[str]:
        return {str(hook) for hook in self.hooks if hook in plugins.HOOKS}

    @property
    def event_hooks(self) -> set[str]:
        """The events the services publish for it. A C module that names no hooks may be an
        event listener, which the ancestor told of everything: every event then."""
        if not self.hooks and self.library is not None:
            return set(plugins.EVENT_HOOKS)
        return {str(hook) for hook in self.hooks if hook in plugins.EVENT_HOOKS}

    @model_validator(mode="after")
    def _one_endpoint(self) -> Plugin:
        endpoints = sum(
            value is not None for value in (self.module, self.url, self.subject, self.library)
        )
        if endpoints > 1 or (endpoints == 0 and self.validation_hooks):
            raise ValueError(
                f"plugin {self.name!r}: set exactly one of module, url, subject and library"
            )
        if not self.hooks and self.library is None:
            raise ValueError(f"plugin {self.name!r}: hooks: name at least one")
        if self.arguments and self.library is None:
            raise ValueError(f"plugin {self.name!r}: arguments are for a C module (library)")
        # Whether the library is there is checked where it is loaded (ingress): the operator
        # validates these settings for pods whose files it does not have.
        if self.library is not None and not self.library.is_absolute():
            raise ValueError(f"plugin {self.name!r}: library: give an absolute path")
        for name in ("ca_file", "secret_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"plugin {self.name!r}: {name}: no such file: {path}")
        return self

    @model_validator(mode="after")
    def _options_for_a_module(self) -> Plugin:
        if self.options is not None and self.module is None:
            raise ValueError(f"plugin {self.name!r}: options are for an in-process plugin (module)")
        return self


class Settings(BaseSettings):
    """Every `EMPATH_*` setting. Field `x` is environment variable `EMPATH_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )
    # Whether the environment and the YAML file are read (`load(environment=False)`: not).
    from_environment: ClassVar[bool] = True

    # `empath up`: where it keeps NATS and object-store data, and where those listen when it
    # starts them (it starts them unless nats_url / s3_endpoint name external ones).
    data_dir: Path = Path(".empath")
    up_nats_listen: str = "127.0.0.1:4222"
    up_s3_listen: str = "127.0.0.1:8333"

    # NATS JetStream.
    nats_url: str = "nats://127.0.0.1:4222"
    nats_connect_timeout: float = Field(default=5.0, gt=0)
    nats_reconnect_wait: float = Field(default=2.0, gt=0)
    publish_timeout: float = Field(default=10.0, gt=0)

    # S3-compatible object store.
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_access_key: str = "empath"
    s3_secret_key: SecretStr = SecretStr("empath-dev-secret")
    s3_bucket: str = Field(default="empath", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_region: str | None = None
    s3_timeout: float = Field(default=30.0, gt=0)
    s3_threads: int = Field(default=16, ge=1, le=256)
    # The CA bundle an `https` endpoint's certificate is verified with (a private CA); unset:
    # the system's. Verification is never off.
    s3_tls_ca: Path | None = None

    # SMTP ingress.
    hostname: str = Field(default_factory=socket.getfqdn, min_length=1)
    smtp_listen: str = "127.0.0.1:2525"
    submission_listen: str | None = None
    relay_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Where mail for <postmaster> and postmaster@<hostname> goes (RFC 5321 §4.5.1).
    postmaster: str | None = Field(default=None, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
    trusted_networks: Annotated[list[Network], NoDecode] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
    )
    max_message_size: int = Field(default=25 * MiB, ge=1024)
    # A message this small travels with its events as well as in the bucket, so its first
    # attempt, dispatched on arrival, does not read the body back (0: never).
    inline_body_limit: int = Field(default=64 * 1024, ge=0, le=256 * 1024)
    max_recipients: int = Field(default=1000, ge=1)
    max_line_length: int = Field(default=998, ge=78, le=65536)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=50, ge=1)
    max_errors: int = Field(default=10, ge=1)
    smtp_command_timeout: float = Field(default=300.0, gt=0)
    smtp_data_timeout: float = Field(default=180.0, gt=0)
    shutdown_grace: float = Field(default=30.0, ge=0)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    auth_credentials_file: Path | None = None
    # How often ingress looks for a renewed certificate or changed AUTH users (seconds).
    tls_reload_interval: float = Field(default=60.0, gt=0)

    # Delivery.
    mx_overrides: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    dns_nameservers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dns_timeout: float = Field(default=5.0, gt=0)
    dns_cache_size: int = Field(default=10000, ge=0)
    tls_policy: TlsPolicy = "verify"
    tls_policies: Annotated[dict[str, TlsPolicy], NoDecode] = Field(default_factory=dict)
    tls_ca_file: Path | None = None
    delivery_concurrency: int = Field(default=20, ge=1, le=1000)
    delivery_port: int = Field(default=25, gt=0, lt=65536)  # of MX hosts; 25 but in tests
    delivery_ack_wait: float = Field(default=30.0, gt=0)
    delivery_connect_timeout: float = Field(default=30.0, gt=0)
    delivery_command_timeout: float = Field(default=300.0, gt=0)
    # Per-destination limits, each held across all delivery workers of the installation (README
    # "Delivery limits"): deliveries in progress at once to one domain (Postfix's
    # default_destination_concurrency_limit), and messages per second only where configured
    # (`domain=rate,...`; the default applies to every other domain, 0: none).
    delivery_destination_concurrency: int = Field(default=20, ge=1, le=10000)
    delivery_rate_limits: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    delivery_rate_limit_default: float = Field(default=0.0, ge=0)
    # Seconds a worker's leased slots outlive it when it dies without giving them back.
    delivery_limits_lease: float = Field(default=10.0, ge=1, le=300)
    # The circuit breaker: after `failures` connection or session failures to one domain within
    # `window` seconds, no connection is tried for `cooldown` seconds, then one message probes
    # (0 failures: no breaker).
    delivery_circuit_failures: int = Field(default=5, ge=0)
    delivery_circuit_window: float = Field(default=60.0, gt=0)
    delivery_circuit_cooldown: float = Field(default=300.0, gt=0, le=86400)
    # The names before limits held across workers, still read with the new meaning (a number
    # for the whole installation): the first is delivery_destination_concurrency, the second
    # delivery_rate_limit_default. Setting an old name and its new one together is an error.
    delivery_max_connections_per_domain: int | None = Field(default=None, ge=1)
    delivery_rate_per_domain: float | None = Field(default=None, ge=0)
    delivery_messages_per_connection: int = Field(default=100, ge=1)
    delivery_idle_timeout: float = Field(default=30.0, gt=0)

    # Queue lifecycle.
    retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 30.0, 120.0, 480.0, 1800.0, 3600.0]
    )
    max_attempts: int = Field(default=25, ge=1)
    max_queue_lifetime: float = Field(default=5 * 24 * 3600.0, gt=0)
    scheduler_interval: float = Field(default=1.0, gt=0)
    spool_concurrency: int = Field(default=32, ge=1, le=1000)
    delivering_timeout: float = Field(default=3600.0, gt=0)
    finished_retention: float = Field(default=7 * 24 * 3600.0, ge=0)
    delay_warning_after: float = Field(default=4 * 3600.0, ge=0)

    # Control API.
    control_listen: str = "127.0.0.1:8025"
    control_token: SecretStr | None = None
    control_token_file: Path | None = None
    control_audit_file: Path | None = None

    # Plugins (a JSON list of objects: name, hooks, module, url or subject, timeout,
    # failure_policy, priority, ...), called in priority order (`Plugin`).
    plugins: list[Plugin] = Field(default_factory=list)

    # Logging and telemetry.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otlp_endpoint: str | None = None
    # Liveness (/livez) and readiness (/readyz) for Kubernetes probes; off unless set.
    health_listen: str | None = None

    # Hardening against hostile peers (issue 10).
    # The whole of DATA, however slowly the client sends it (seconds).
    smtp_data_deadline: float = Field(default=600.0, gt=0)
    # One delivery session with one MX host: connect, greeting, EHLO, TLS, the transaction.
    delivery_session_timeout: float = Field(default=900.0, gt=0)
    # Whether a DSN may return the whole message to the sender of mail from an untrusted,
    # unauthenticated client (otherwise only its headers: no backscatter of chosen content).
    full_dsn_from_untrusted: bool = False
    # The most of the IPv4 (or IPv6) address space the trusted networks together may cover.
    trusted_networks_max_share: float = Field(default=0.01, gt=0, lt=1)

    # Named control tokens: a file of `name:token` lines, each name recorded in the audit log
    # for the calls made with its token (read by the control service at start).
    control_tokens_file: Path | None = None

    # NATS credentials of this service (README "Security"): its NATS user and password, the
    # password from a file (a Kubernetes Secret), and TLS to NATS (a CA, optionally a client
    # certificate). Unset user: anonymous, as a NATS without authorization expects.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_password_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # Signed `received` events (README "Security", `empath.core.signing`): this service's
    # Ed25519 private key (ingress and the spool sign what they publish with it), the public
    # keys the spool accepts a `received` from (ingress's; its own is trusted anyway), and the
    # switch: `on` (ingress and the spool refuse to start without their keys) or `off`.
    event_signing: Literal["on", "off"] = "on"
    event_signing_key_file: Path | None = None
    event_trusted_keys_file: Path | None = None
    # Upgrading from a version without signing (README "Security"): for this many seconds after
    # a spool first starts with signing while the last `received` is unsigned (an ingress pod
    # not yet upgraded), it still queues unsigned events JetStream stored until then; 0
    # refuses them from the start.
    event_unsigned_grace: float = Field(default=3600, ge=0, le=7 * 86400)
    # A signed `received` that JetStream stored longer than this after its `received_at` is
    # refused as a replay (ingress publishes within seconds; the slack is for clock skew).
    event_max_delay: float = Field(default=900, ge=60, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """The old per-worker limit names mean their replacements; both at once is an error."""
        if not isinstance(data, dict):
            return data
        for old, new in RENAMED.items():
            if data.get(old) is None:
                continue
            if data.get(new) is not None:
                raise ValueError(
                    f"{ENV_PREFIX}{old.upper()} is the old name of {ENV_PREFIX}{new.upper()}: "
                    "set only the new one"
                )
            # The old one is cleared, so the settings dump (and a copy made from it) holds one.
            data = {**data, new: data[old], old: None}
        return data

    # JetStream replication (issue 15): the replicas of every stream and KV bucket (3 on a
    # production NATS cluster, so that losing a node loses no record; 1 on one node), and the
    # placement tags of the servers they must live on (none: any). A running installation's
    # streams and buckets take a changed count when the spool next starts.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    nats_placement_tags: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How the NATS that `empath up` starts writes JetStream to disk: `always` syncs every write
    # before acknowledging it (a 250 survives a power loss); `interval` is NATS's default (every
    # two minutes: faster, but a machine crash loses the last acknowledged writes).
    up_nats_sync: Literal["always", "interval"] = "always"

    @model_validator(mode="after")
    def _nats_credentials(self) -> Settings:
        for name in (
            "nats_password_file",
            "nats_tls_ca",
            "nats_tls_cert",
            "nats_tls_key",
            "event_signing_key_file",
            "event_trusted_keys_file",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: no such file: {path}")
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError(
                f"{ENV_PREFIX}NATS_PASSWORD and {ENV_PREFIX}NATS_PASSWORD_FILE: set one, not both"
            )
        if (self.nats_password or self.nats_password_file) and not self.nats_user:
            raise ValueError(f"{ENV_PREFIX}NATS_USER: needed with a NATS password")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError(
                f"{ENV_PREFIX}NATS_TLS_CERT and {ENV_PREFIX}NATS_TLS_KEY must be set together"
            )
        return self

    def nats_secret(self) -> str | None:
        """The NATS password, read from its file when called (`bus.connect`, at start)."""
        if self.nats_password is not None:
            return self.nats_password.get_secret_value()
        if self.nats_password_file is not None:
            return self.nats_password_file.read_text().strip()
        return None

    @model_validator(mode="after")
    def _trusted_share(self) -> Settings:
        """The open-relay guard on the union of the trusted networks: `0.0.0.0/1,128.0.0.0/1`
        trusts the whole Internet as surely as `0.0.0.0/0` does."""
        v4 = [n for n in self.trusted_networks if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in self.trusted_networks if isinstance(n, ipaddress.IPv6Network)]
        for version, bits, covered in (
            (4, 32, sum(n.num_addresses for n in ipaddress.collapse_addresses(v4))),
            (6, 128, sum(n.num_addresses for n in ipaddress.collapse_addresses(v6))),
        ):
            if covered / 2**bits > self.trusted_networks_max_share:
                raise ValueError(
                    f"{ENV_PREFIX}TRUSTED_NETWORKS: together the networks trust "
                    f"{covered / 2**bits:.1%} of the IPv{version} addresses, more than the "
                    f"{self.trusted_networks_max_share:.1%} that "
                    f"{ENV_PREFIX}TRUSTED_NETWORKS_MAX_SHARE allows: that is an open relay"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.from_environment:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise errors.ConfigurationError(f"{CONFIG_ENV}: no such file: {config_file}")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @field_validator("relay_domains", mode="before")
    @classmethod
    def _domains(cls, value: Any) -> Any:
        value = split_commas(value)
        if isinstance(value, list):
            value = [addresses.normal_domain(str(d)) for d in value]
            for domain in value:
                if not domain or " " in domain or "@" in domain:
                    raise ValueError(f"not a domain: {domain!r}")
        return value

    @field_validator("mx_overrides", "tls_policies", "delivery_rate_limits", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """`domain=value,domain=value` -> {domain: value}."""
        if isinstance(value, str):
            pairs = {}
            for item in split_commas(value):
                domain, sep, target = item.partition("=")
                if not sep or not domain.strip() or not target.strip():
                    raise ValueError(f"expected domain=value, got {item!r}")
                pairs[addresses.normal_domain(domain)] = target.strip()
            return pairs
        return value

    @field_validator("mx_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            addresses.parse_target(target)
        return value

    @field_validator("delivery_rate_limits")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for domain, rate in value.items():
            if rate < 0:
                raise ValueError(f"{domain}: a rate is messages per second, 0 or more")
        return {addresses.normal_domain(domain): rate for domain, rate in value.items()}

    def delivery_rate_for(self, domain: str) -> float:
        """Messages per second allowed to `domain` across all workers (0: no limit)."""
        return self.delivery_rate_limits.get(domain, self.delivery_rate_limit_default)

    @field_validator(
        "dns_nameservers",
        "retry_schedule",
        "trusted_networks",
        "nats_placement_tags",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("dns_nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        for server in value:
            addresses.parse_nameserver(server)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("expected a non-empty list of delays in seconds, none negative")
        return value

    @field_validator("trusted_networks")
    @classmethod
    def _no_open_relay(cls, value: list[Network]) -> list[Network]:
        for network in value:
            if network.prefixlen == 0:
                raise ValueError(
                    f"{network} trusts every address on the Internet: that is an open relay"
                )
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        for url in value.split(","):
            parts = urlsplit(url.strip())
            if parts.scheme not in {"nats", "tls"} or not parts.hostname:
                raise ValueError(f"expected nats://host:port, got {url!r}")
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.path
            not in {
                "",
                "/",
            }
        ):
            raise ValueError(f"expected http(s)://host:port, got {value!r}")
        return value

    @field_validator(
        "smtp_listen",
        "submission_listen",
        "up_nats_listen",
        "up_s3_listen",
        "control_listen",
        "health_listen",
    )
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            addresses.parse_hostport(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        for name in (
            "tls_cert_file",
            "tls_key_file",
            "auth_credentials_file",
            "tls_ca_file",
            "control_token_file",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: no such file: {path}")
        if self.submission_listen and not (self.tls_cert_file and self.auth_credentials_file):
            raise ValueError(
                f"{ENV_PREFIX}SUBMISSION_LISTEN needs {ENV_PREFIX}TLS_CERT_FILE, "
                f"{ENV_PREFIX}TLS_KEY_FILE and {ENV_PREFIX}AUTH_CREDENTIALS_FILE"
            )
        return self

    @model_validator(mode="after")
    def _s3_tls_ca(self) -> Settings:
        """The store's CA is loaded as the store client will load it, so that a missing,
        unreadable or malformed bundle stops the service at start, not its first message."""
        if self.s3_tls_ca is None:
            return self
        name = f"{ENV_PREFIX}S3_TLS_CA"
        if not self.s3_secure:
            raise ValueError(f"{name}: given, but {ENV_PREFIX}S3_ENDPOINT is not https")
        try:
            ssl.create_default_context(cafile=str(self.s3_tls_ca))
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"{name}: cannot load {self.s3_tls_ca}: {error}") from None
        return self

    @property
    def s3_secure(self) -> bool:
        return urlsplit(self.s3_endpoint).scheme == "https"

    @property
    def s3_host(self) -> str:
        """`host:port` as the minio SDK wants it."""
        return urlsplit(self.s3_endpoint).netloc


class _Given(Settings):
    """Exactly the values given: neither the environment nor a YAML file is read."""

    from_environment: ClassVar[bool] = False


def load(*, environment: bool = True, **overrides: Any) -> Settings:
    """Read the settings, or raise `ConfigurationError` naming every wrong one.

    With `environment=False` only `overrides` count: how the operator checks the settings it
    renders for other pods without its own environment getting in the way.
    """
    try:
        return Settings(**overrides) if environment else _Given(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"][:1])
            name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if field else message)
        raise errors.ConfigurationError("invalid setting " + "; ".join(problems)) from None


def environment(config: Settings) -> dict[str, str]:
    """The `EMPATH_*` variables that give another process exactly `config`, in the forms this
    README documents (lists and maps comma-separated, plugins as JSON, secrets in clear): how
    `empath up` starts each service as its own process."""
    env: dict[str, str] = {}
    for name, value in config.model_dump(mode="json").items():
        raw = getattr(config, name)
        if raw is None:
            continue
        if isinstance(raw, SecretStr):
            text = raw.get_secret_value()
        elif name == "plugins":
            text = json.dumps(value)
        elif isinstance(value, list):
            text = ",".join(map(str, value))
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def unknown_environment() -> list[str]:
    """`EMPATH_*` variables that are no setting: most likely typos, worth a warning.

    Not an error: Kubernetes service links put `<SERVICE>_PORT` and the like into every pod, and
    a Service named `empath` would otherwise stop the system.
    """
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {CONFIG_ENV}
    return sorted(name for name in os.environ if name.startswith(ENV_PREFIX) and name not in known)
