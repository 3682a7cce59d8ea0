"""The TOML configuration, loaded once into immutable objects.

Every error names the key it is about (`connections.kiiex-main.base_url: ...`), and a file
with any error is refused whole: the gateway never starts half-configured. Secrets never
live in the file; it names the environment variables that hold them.
"""

from __future__ import annotations

import importlib.util
import re
import ssl
import tempfile
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
_MISSING: Any = object()


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Table:
    """A TOML table being read: typed getters that name the key path, and a check for leftovers.
    Every secret read from the environment is noted in `secrets` (shared by the whole file),
    so the gateway can scrub them from whatever upstream text it passes on."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        environ: Mapping[str, str],
        secrets: list[str] | None = None,
    ) -> None:
        self._data = data
        self._path = path
        self._environ = environ
        self._read: set[str] = set()
        self.secrets: list[str] = [] if secrets is None else secrets

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _get(self, name: str, kind: type[T] | tuple[type, ...], default: Any) -> Any:
        self._read.add(name)
        if name not in self._data:
            if default is _MISSING:
                raise ConfigError(f"{self.key(name)}: is required")
            return default
        value = self._data[name]
        # bool is an int in Python; a TOML `true` must not pass as a number.
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            wanted = kind.__name__ if isinstance(kind, type) else "number"
            raise ConfigError(f"{self.key(name)}: expected a {wanted}, got {value!r}")
        return value

    def string(self, name: str, default: str = _MISSING) -> str:
        value: str = self._get(name, str, default)
        return value

    def boolean(self, name: str, default: bool = _MISSING) -> bool:
        value: bool = self._get(name, bool, default)
        return value

    def integer(
        self, name: str, default: int = _MISSING, minimum: int = 1, maximum: int = 2**31 - 1
    ) -> int:
        value: int = self._get(name, int, default)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self.key(name)}: must be from {minimum} to {maximum}, got {value}")
        return value

    def seconds(self, name: str, default: float = _MISSING) -> float:
        value = float(self._get(name, (int, float), default))
        if value <= 0:
            raise ConfigError(f"{self.key(name)}: must be a positive number of seconds")
        return value

    def fraction(self, name: str, default: float = _MISSING) -> float:
        value = float(self._get(name, (int, float), default))
        if not 0 <= value <= 1:
            raise ConfigError(f"{self.key(name)}: must be from 0 to 1, got {value}")
        return value

    def choice(self, name: str, choices: Mapping[str, T], default: str = _MISSING) -> T:
        value = self.string(name, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {sorted(choices)}, got {value!r}")
        return choices[value]

    def url(self, name: str, default: str = _MISSING) -> str:
        value = self.string(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{self.key(name)}: must be an http(s) URL, got {value!r}")
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            # Paths are appended to it: a query or fragment would swallow them.
            raise ConfigError(f"{self.key(name)}: no query or fragment, got {value!r}")
        return value.rstrip("/")

    def secret(self, name: str, default: str = _MISSING) -> str:
        """Reads `name` (e.g. `password_env`): the environment variable that holds the secret
        (`default` names the variable when the key is absent)."""
        variable = self.string(name, default)
        secret = self._environ.get(variable, "")
        if not secret:
            raise ConfigError(f"{self.key(name)}: environment variable {variable} is not set")
        self.secrets.append(secret)
        return secret

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = self._get(name, list, list(default))
        if not all(isinstance(value, str) for value in values):
            raise ConfigError(f"{self.key(name)}: expected a list of strings, got {values!r}")
        return tuple(values)

    def file(self, name: str, default: str = "") -> bytes | None:
        """Reads the file a key names; None when the key is empty."""
        path = self.string(name, default)
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(f"{self.key(name)}: cannot read {path}: {error.strerror}") from error

    def has(self, name: str) -> bool:
        return name in self._data

    def table(self, name: str) -> Table:
        data = self._get(name, dict, {})
        return Table(data, self.key(name), self._environ, self.secrets)

    def array(self, name: str) -> list[Table]:
        """An array of tables (`[[name]]`), each named by its index (`callers[0].jobs`)."""
        items = self._get(name, list, [])
        if not all(isinstance(item, dict) for item in items):
            raise ConfigError(f"{self.key(name)}: expected [[{name}]] tables")
        return [
            Table(item, f"{self.key(name)}[{i}]", self._environ, self.secrets)
            for i, item in enumerate(items)
        ]

    def tables(self) -> dict[str, Table]:
        """Every sub-table of this table, by name."""
        return {name: self.table(name) for name in self._data}

    def finish(self) -> None:
        """Refuses keys nobody read: a typo must not silently fall back to a default."""
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 3
    backoff_initial: float = 0.1
    backoff_max: float = 2.0


@dataclass(frozen=True)
class BreakerSettings:
    """The circuit breaker of one connection (see `gateway.resilience.CircuitBreaker`)."""

    failure_threshold: int = 5
    reset_seconds: float = 30.0


@dataclass(frozen=True)
class ConnectionSettings:
    """One named upstream connection; `options` holds what only its adapter understands."""

    name: str
    upstream: str
    default: bool
    timeout: float
    pool_size: int
    max_in_flight: int
    retry: RetrySettings
    confirm_timeout: float
    confirm_interval: float
    options: Any = field(repr=False)
    breaker: BreakerSettings = BreakerSettings()


LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}
EVENT_LOOPS = {"uvloop": "uvloop", "asyncio": "asyncio"}


@dataclass(frozen=True)
class TlsSettings:
    """The gRPC port's certificate and key (PEM); with `client_ca`, client certificates
    signed by it are required (mTLS)."""

    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "127.0.0.1:50051"
    # Long enough for an attempt at the default timeout_seconds (5) to finish in a drain.
    shutdown_grace: float = 10.0
    # Loopback unless configured otherwise: metrics are for the host's own scraper.
    metrics_listen: str = "127.0.0.1:9464"
    log_level: str = "INFO"
    allow_unauthenticated: bool = False
    reflection: bool = True
    tls: TlsSettings | None = None
    # A plaintext port serving only the health service, for probes that cannot speak TLS.
    health_listen: str = ""
    # Processes sharing the gRPC port (SO_REUSEPORT, asked for only by this).
    workers: int = 1
    # uvloop measured a few per cent less CPU per call (README, Performance); asyncio's
    # own loop stays one key away.
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class CallerSettings:
    """One `[[callers]]` entry: who may call, how they prove it, what they may cancel."""

    name: str
    token_sha256: str
    cert_subject: str
    jobs: frozenset[str]
    connections: frozenset[str]
    rate_per_second: float
    burst: int


STORES = {"memory": "memory", "redis": "redis"}


@dataclass(frozen=True)
class IdempotencySettings:
    store: str = "memory"
    redis_url: str = ""
    ttl: float = 86400.0
    # A running call renews its lease every third of this; a dead one's key is free after it.
    lease: float = 6.0


EXPORTERS = {"off": "off", "console": "console", "otlp": "otlp"}


@dataclass(frozen=True)
class TracingSettings:
    exporter: str = "off"
    endpoint: str = ""
    """The OTLP/HTTP traces URL (`otlp` only), e.g. http://collector:4318/v1/traces."""
    service_name: str = "cancellation-gateway"
    # Of the traces the gateway starts itself; a caller's sampled flag is followed as sent.
    sample_ratio: float = 1.0


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    connections: Mapping[str, ConnectionSettings]
    idempotency: IdempotencySettings = IdempotencySettings()
    tracing: TracingSettings = TracingSettings()
    callers: tuple[CallerSettings, ...] = ()
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    """Every secret value the file made the gateway read (passwords, keys, client secrets)."""

    def default_connection(self, upstream: str) -> ConnectionSettings | None:
        candidates = [c for c in self.connections.values() if c.upstream == upstream]
        defaults = [c for c in candidates if c.default]
        if defaults:
            return defaults[0]
        return candidates[0] if len(candidates) == 1 else None


OptionsParser = Callable[[Table], Any]
"""Reads an upstream's own keys from a connection table (adapter-specific settings)."""


def _address(table: Table, name: str, default: str, optional: bool = False) -> str:
    """A `host:port` key; port 0 asks the OS for a free port; "" turns an optional one off."""
    value = table.string(name, default)
    if optional and not value:
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{table.key(name)}: expected host:port, got {value!r}")
    return value


def _event_loop(table: Table) -> str:
    loop = table.choice("event_loop", EVENT_LOOPS, "uvloop")
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(f'{table.key("event_loop")}: uvloop is not installed; set "asyncio"')
    return loop


def _server(table: Table) -> ServerSettings:
    defaults = ServerSettings()
    settings = ServerSettings(
        listen=_address(table, "listen", defaults.listen),
        shutdown_grace=table.seconds("shutdown_grace_seconds", defaults.shutdown_grace),
        metrics_listen=_address(table, "metrics_listen", defaults.metrics_listen, optional=True),
        log_level=table.choice("log_level", LOG_LEVELS, "info"),
        allow_unauthenticated=table.boolean("allow_unauthenticated", False),
        reflection=table.boolean("reflection", True),
        tls=_tls(table.table("tls")),
        health_listen=_address(table, "health_listen", "", optional=True),
        workers=table.integer("workers", 1, maximum=64),
        event_loop=_event_loop(table),
    )
    ports = {
        key: address.rpartition(":")[2]
        for key in ("listen", "metrics_listen", "health_listen")
        if (address := getattr(settings, key)) and not address.endswith(":0")
    }
    for key, port in ports.items():
        if list(ports.values()).count(port) > 1:
            raise ConfigError(f"{table.key(key)}: port {port} is given to two listeners")
    table.finish()
    return settings


def _tls(table: Table) -> TlsSettings | None:
    cert, key, ca = table.file("cert_file"), table.file("key_file"), table.file("client_ca_file")
    table.finish()
    if cert is None and key is None:
        if ca is not None:
            raise ConfigError(f"{table.key('client_ca_file')}: needs cert_file and key_file")
        return None
    if cert is None or key is None:
        raise ConfigError(f"{table.key('cert_file')}: give both cert_file and key_file")
    _check_pem(table, cert, key, ca)
    return TlsSettings(cert, key, ca)


def _check_pem(table: Table, cert: bytes, key: bytes, ca: bytes | None) -> None:
    """The certificate and key load and belong together; the CA bundle loads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        try:
            context.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(
                f"{table.key('cert_file')}: the certificate and key do not load as a pair "
                f"({error.__class__.__name__})"
            ) from error
    if ca is not None:
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(f"{table.key('client_ca_file')}: not a PEM CA bundle") from error


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _caller(table: Table, connections: Mapping[str, ConnectionSettings]) -> CallerSettings:
    name = table.string("name")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{table.key('name')}: letters, digits, '.', '_', '-'; at most 64")
    if name == "anonymous":
        raise ConfigError(f"{table.key('name')}: 'anonymous' is the name of no-one in particular")
    token = table.string("token_sha256", "")
    if token and not _SHA256.fullmatch(token):
        raise ConfigError(
            f"{table.key('token_sha256')}: the SHA-256 of the token, as 64 lower-case hex "
            "characters (never the token itself)"
        )
    subject = table.string("cert_subject", "")
    if subject and (":" in subject.partition("@")[0] or not subject.isprintable()):
        raise ConfigError(
            f"{table.key('cert_subject')}: the name itself (a DNS name, or an e-mail address), "
            f"no type prefix, got {subject!r}"
        )
    if not token and not subject:
        raise ConfigError(f"{table.key('token_sha256')}: give token_sha256 or cert_subject")
    unknown = sorted(set(table.strings("connections")) - set(connections))
    if unknown:
        raise ConfigError(f"{table.key('connections')}: no connection named {unknown[0]!r}")
    rate = table.seconds("rate_per_second", 20.0)  # a positive number, read like seconds
    settings = CallerSettings(
        name=name,
        token_sha256=token,
        cert_subject=subject,
        jobs=frozenset(table.strings("jobs")),
        connections=frozenset(table.strings("connections")),
        rate_per_second=rate,
        burst=table.integer("burst", max(1, round(2 * rate))),
    )
    if not settings.jobs:
        raise ConfigError(f"{table.key('jobs')}: list the job kinds the caller may cancel")
    table.finish()
    return settings


def _callers(tables: list[Table], config: Config, job_kinds: Collection[str] | None) -> None:
    """Checks the callers as a whole: unique names and credentials, known job kinds, and
    that a gateway without callers is one that asked to be open."""
    if not config.callers and not config.server.allow_unauthenticated:
        raise ConfigError(
            "callers: no [[callers]] configured: add one, or set "
            "server.allow_unauthenticated = true (only where nobody else can reach it)"
        )
    if config.callers and config.server.allow_unauthenticated:
        raise ConfigError(
            "server.allow_unauthenticated: with [[callers]] configured, a call without "
            "credentials would pass none of their limits; choose one"
        )
    if any(c.cert_subject for c in config.callers) and (
        config.server.tls is None or config.server.tls.client_ca is None
    ):
        raise ConfigError(
            "server.tls.client_ca_file: callers named by cert_subject need client "
            "certificates, which only mTLS asks for"
        )
    known = sorted(job_kinds or ())
    seen: set[tuple[str, str]] = set()
    for table, caller in zip(tables, config.callers, strict=True):
        for key in ("name", "token_sha256", "cert_subject"):
            value = getattr(caller, key)
            if value and (key, value) in seen:
                raise ConfigError(f"{table.key(key)}: another caller has the same {key}")
            seen.add((key, value))
        unknown = sorted(caller.jobs - set(known)) if job_kinds is not None else []
        if unknown:
            raise ConfigError(
                f"{table.key('jobs')}: no job kind {unknown[0]!r} (known: {', '.join(known)})"
            )


def _retry(table: Table) -> RetrySettings:
    defaults = RetrySettings()
    settings = RetrySettings(
        max_attempts=table.integer("max_attempts", defaults.max_attempts, maximum=10),
        backoff_initial=table.seconds("backoff_initial_seconds", defaults.backoff_initial),
        backoff_max=table.seconds("backoff_max_seconds", defaults.backoff_max),
    )
    table.finish()
    return settings


def _breaker(table: Table) -> BreakerSettings:
    defaults = BreakerSettings()
    settings = BreakerSettings(
        failure_threshold=table.integer("failure_threshold", defaults.failure_threshold),
        reset_seconds=table.seconds("reset_seconds", defaults.reset_seconds),
    )
    table.finish()
    return settings


def _connection(
    name: str, table: Table, upstreams: Mapping[str, OptionsParser]
) -> ConnectionSettings:
    parse_options = table.choice("upstream", upstreams)
    settings = ConnectionSettings(
        name=name,
        upstream=table.string("upstream"),
        default=table.boolean("default", False),
        timeout=table.seconds("timeout_seconds", 5.0),
        pool_size=table.integer("pool_size", min(8, table.integer("max_in_flight", 32))),
        max_in_flight=table.integer("max_in_flight", 32),
        retry=_retry(table.table("retry")),
        confirm_timeout=table.seconds("confirm_timeout_seconds", 10.0),
        confirm_interval=table.seconds("confirm_interval_seconds", 0.25),
        options=parse_options(table),
        breaker=_breaker(table.table("breaker")),
    )
    table.finish()
    return settings


# A drain lets in-flight attempts finish; this much of the grace is kept for answering and
# closing after the longest one.
DRAIN_MARGIN = 1.0


def _check_fits_the_grace(
    connections: Mapping[str, ConnectionSettings], server: ServerSettings
) -> None:
    """An attempt started just before SIGTERM must end inside the drain: refuse what cannot."""
    for name, connection in connections.items():
        if connection.timeout > server.shutdown_grace - DRAIN_MARGIN:
            raise ConfigError(
                f"connections.{name}.timeout_seconds: {connection.timeout:g}s does not fit in "
                f"server.shutdown_grace_seconds ({server.shutdown_grace:g}s) less "
                f"{DRAIN_MARGIN:g}s to answer: lower it or raise the grace"
            )
        if connection.pool_size > connection.max_in_flight:
            raise ConfigError(
                f"connections.{name}.pool_size: keeps {connection.pool_size} connections "
                f"open, more than max_in_flight ({connection.max_in_flight}) can use"
            )


def _idempotency(table: Table) -> IdempotencySettings:
    defaults = IdempotencySettings()
    store = table.choice("store", STORES, defaults.store)
    variable_key, variable_default = "redis_url_env", "CANCELGW_REDIS_URL"
    variable = table.string(variable_key, variable_default)
    redis_url = ""
    if store == "redis":
        redis_url = table.secret(variable_key, variable_default)
        if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"{table.key(variable_key)}: {variable} must hold a redis://, rediss:// or "
                "unix:// URL"
            )
    settings = IdempotencySettings(
        store=store,
        redis_url=redis_url,
        ttl=table.seconds("ttl_seconds", defaults.ttl),
        lease=table.seconds("lease_seconds", defaults.lease),
    )
    table.finish()
    return settings


def _tracing(table: Table) -> TracingSettings:
    defaults = TracingSettings()
    exporter = table.choice("exporter", EXPORTERS, defaults.exporter)
    endpoint = table.url("endpoint") if exporter == "otlp" else table.string("endpoint", "")
    if endpoint and exporter != "otlp":
        raise ConfigError(f'{table.key("endpoint")}: only used with exporter = "otlp"')
    settings = TracingSettings(
        exporter=exporter,
        endpoint=endpoint,
        service_name=table.string("service_name", defaults.service_name),
        sample_ratio=table.fraction("sample_ratio", defaults.sample_ratio),
    )
    table.finish()
    return settings


def _check_defaults(connections: Mapping[str, ConnectionSettings]) -> None:
    for upstream in {c.upstream for c in connections.values()}:
        defaults = sorted(n for n, c in connections.items() if c.upstream == upstream and c.default)
        if len(defaults) > 1:
            raise ConfigError(
                f"connections.{defaults[1]}.default: {upstream} already has a default "
                f"connection ({defaults[0]})"
            )


def parse_config(
    data: Mapping[str, Any],
    environ: Mapping[str, str],
    upstreams: Mapping[str, OptionsParser],
    job_kinds: Collection[str] | None = None,
) -> Config:
    """`job_kinds`, when given, are the names a caller's `jobs` may use."""
    root = Table(data, "", environ)
    server = _server(root.table("server"))
    connections = {
        name: _connection(name, table, upstreams)
        for name, table in root.table("connections").tables().items()
    }
    if not connections:
        raise ConfigError("connections: at least one connection is required")
    _check_defaults(connections)
    _check_fits_the_grace(connections, server)
    idempotency = _idempotency(root.table("idempotency"))
    if server.workers > 1 and idempotency.store == "memory":
        raise ConfigError(
            f"server.workers: {server.workers} workers cannot share keys kept in memory; "
            'set idempotency.store = "redis"'
        )
    tracing = _tracing(root.table("tracing"))
    caller_tables = root.array("callers")
    callers = tuple(_caller(table, connections) for table in caller_tables)
    root.finish()
    config = Config(
        server=server,
        connections=connections,
        idempotency=idempotency,
        tracing=tracing,
        callers=callers,
        secrets=frozenset(root.secrets),
    )
    _callers(caller_tables, config, job_kinds)
    return config


def load_config(
    path: Path,
    environ: Mapping[str, str],
    upstreams: Mapping[str, OptionsParser],
    job_kinds: Collection[str] | None = None,
) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    return parse_config(with_overrides(data, environ), environ, upstreams, job_kinds)


# Environment variables that override `[server]` keys of the file (a platform sets these
# per pod or per worker without templating the file).
SERVER_OVERRIDES = {
    "CANCELGW_LISTEN": "listen",
    "CANCELGW_METRICS_LISTEN": "metrics_listen",
    "CANCELGW_LOG_LEVEL": "log_level",
}


def with_overrides(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`data` with the `[server]` keys any set override variable names replaced."""
    server = dict(data.get("server", {}))
    for variable, key in SERVER_OVERRIDES.items():
        if variable in environ:
            server[key] = environ[variable]
    return {**data, "server": server}
