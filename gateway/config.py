"""The TOML configuration, read whole into immutable sections, each declared beside what it
configures: `[server]` (gateway.serving), `[connections.NAME]` (gateway.connection, plus
the keys its upstream's package declares), `[idempotency]`, `[tracing]` and `[[callers]]`
(gateway.idempotency, gateway.tracing, gateway.auth). Reading them is gateway.schema's.

Every error names the key it is about (`connections.billing-eu.base_url: ...`), and a file
with any error is refused whole: the gateway never starts half-configured. Here: the file,
the environment's overrides, and the rules that span sections.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from gateway.auth import CallerSettings
from gateway.connection import ConnectionSettings
from gateway.egress import Egress, EgressError, egress_of
from gateway.idempotency import IdempotencySettings
from gateway.schema import (
    ConfigError,
    Reading,
    Section,
    keys_of,
    reference_table,
    secret_keys,
    twin,
)
from gateway.serving import ServerSettings
from gateway.tracing import TracingSettings

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "parse_config",
    "reference_markdown",
    "with_overrides",
]

OptionSchemas = Mapping[str, type[Section]]
"""Each upstream's own connection keys (`Upstream.options`), by upstream name."""

# A drain lets in-flight attempts finish; this much of the grace is kept for answering and
# closing after the longest one.
DRAIN_MARGIN = 1.0
_SHARED_KEYS = frozenset(
    info.encode_name
    for info in msgspec.structs.fields(ConnectionSettings)
    if info.name not in ConnectionSettings.derived
) | {twin(key) for key in secret_keys(ConnectionSettings)}


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    connections: Mapping[str, ConnectionSettings]
    idempotency: IdempotencySettings = field(default_factory=IdempotencySettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    callers: tuple[CallerSettings, ...] = ()
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    """Every secret value the file made the gateway read (passwords, keys, client secrets)."""

    def default_connection(self, upstream: str) -> ConnectionSettings | None:
        candidates = [c for c in self.connections.values() if c.upstream == upstream]
        defaults = [c for c in candidates if c.default]
        if defaults:
            return defaults[0]
        return candidates[0] if len(candidates) == 1 else None


def parse_config(
    data: Mapping[str, Any],
    environ: Mapping[str, str],
    upstreams: OptionSchemas,
    job_kinds: Collection[str] | None = None,
) -> Config:
    """`job_kinds`, when given, are the names a caller's `jobs` may use. Every section is
    read even when an earlier one failed, so the error names every problem, a line each."""
    problems = _Problems()
    unknown = sorted(data.keys() - {"server", "connections", "idempotency", "tracing", "callers"})
    problems.extend(f"{key}: unknown key" for key in unknown)
    reading = Reading(environ)
    server = problems.attempt(
        lambda: reading.section(data.get("server", {}), ServerSettings, "server")
    )
    tables = problems.attempt(lambda: _tables(data, "connections")) or {}
    connections = {
        name: connection
        for name, table in tables.items()
        if (connection := problems.attempt(partial(_connection, reading, name, table, upstreams)))
    }
    if not tables:
        problems.append("connections: at least one connection is required")
    idempotency = problems.attempt(lambda: _idempotency(reading, data.get("idempotency", {})))
    tracing = problems.attempt(
        lambda: reading.section(data.get("tracing", {}), TracingSettings, "tracing")
    )
    callers = problems.attempt(lambda: _caller_sections(reading, data.get("callers", [])))
    if problems or server is None or idempotency is None or tracing is None or callers is None:
        raise ConfigError("\n".join(problems))
    config = Config(
        server=server,
        connections=connections,
        idempotency=idempotency,
        tracing=tracing,
        callers=callers,
        secrets=frozenset(reading.secrets),
    )
    for check in (_defaults, _fits_the_grace, _workers, _callers):
        problems.attempt(partial(check, config))
    problems.attempt(partial(_caller_references, config, job_kinds))
    if problems:
        raise ConfigError("\n".join(problems))
    return config


T = TypeVar("T")


class _Problems(list[str]):
    """Every problem the file has, in the order found."""

    def attempt(self, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except ConfigError as error:
            self.extend(str(error).splitlines())
            return None


def _caller_sections(reading: Reading, callers: object) -> tuple[CallerSettings, ...]:
    if not isinstance(callers, list):
        raise ConfigError("callers: expected [[callers]] tables")
    problems = _Problems()
    read = [
        problems.attempt(partial(reading.section, table, CallerSettings, f"callers[{i}]"))
        for i, table in enumerate(callers)
    ]
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(caller for caller in read if caller is not None)


def _tables(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    tables = data.get(key, {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{key}: expected [{key}.NAME] tables")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{key}.{name}: expected a table")
    return tables


def _connection(
    reading: Reading, name: str, table: Mapping[str, Any], upstreams: OptionSchemas
) -> ConnectionSettings:
    """The shared keys, then the rest of the table as its upstream's own keys."""
    path = f"connections.{name}"
    shared = {key: value for key, value in table.items() if key in _SHARED_KEYS}
    settings = reading.section(shared, ConnectionSettings, path)
    schema = upstreams.get(settings.upstream)
    if schema is None:
        raise ConfigError(
            f"{path}.upstream: must be one of {sorted(upstreams)}, got {settings.upstream!r}"
        )
    own = {key: value for key, value in table.items() if key not in _SHARED_KEYS}
    options = reading.section(own, schema, path)
    base_url = str(getattr(options, "base_url", ""))  # every upstream's options have one
    egress = _egress(reading, path, base_url, settings)
    _check_plaintext(path, base_url, egress, settings.allow_plaintext)
    return msgspec.structs.replace(settings, name=name, options=options, egress=egress)


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _check_plaintext(path: str, base_url: str, egress: Egress, allowed: bool) -> None:
    """Credentials cross the network in clear over http:// to any host but this one, and
    to a proxy wherever it is."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or allowed:
        return
    if egress.proxy:
        where = f"through {egress.describe()}"
    elif not _loopback(parts.hostname or ""):
        where = f"to {parts.hostname}, which is not loopback"
    else:
        return
    raise ConfigError(
        f"{path}.allow_plaintext: {base_url} is http:// {where}: use https://, or set "
        "allow_plaintext = true"
    )


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _egress(reading: Reading, path: str, base_url: str, settings: ConnectionSettings) -> Egress:
    try:
        egress = egress_of(
            base_url, settings.proxy, settings.proxy_credentials or "", reading.environ
        )
    except EgressError as error:
        key = "proxy" if settings.proxy is not None else "proxy (from the environment)"
        raise ConfigError(f"{path}.{key}: {error}") from None
    password = egress.credentials.partition(":")[2]
    if password:  # from the environment's proxy URL: a secret like any other
        reading.secrets.append(password)
    return egress


def _idempotency(reading: Reading, table: object) -> IdempotencySettings:
    settings = reading.section(table, IdempotencySettings, "idempotency")
    if settings.store != "redis":
        return settings
    given = table if isinstance(table, dict) else {}
    if settings.redis_url_file and "redis_url_env" in given:
        raise ConfigError(
            "idempotency.redis_url_file: give redis_url_env or redis_url_file, not both"
        )
    key = "idempotency.redis_url_file" if settings.redis_url_file else "idempotency.redis_url_env"
    try:
        if settings.redis_url_file:
            redis_url = reading.secret_file(settings.redis_url_file)
        else:
            redis_url = reading.secret(settings.redis_url_env)
    except (TypeError, ValueError) as error:  # no variable named, none set, no file
        raise ConfigError(f"{key}: {error}") from None
    if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{key}: must hold a redis://, rediss:// or unix:// URL")
    return msgspec.structs.replace(settings, redis_url=redis_url)


def _defaults(config: Config) -> None:
    connections = config.connections
    for upstream in {c.upstream for c in connections.values()}:
        defaults = sorted(n for n, c in connections.items() if c.upstream == upstream and c.default)
        if len(defaults) > 1:
            raise ConfigError(
                f"connections.{defaults[1]}.default: {upstream} already has a default "
                f"connection ({defaults[0]})"
            )


def _fits_the_grace(config: Config) -> None:
    """An attempt started just before SIGTERM must end inside the drain: refuse what cannot."""
    grace = config.server.shutdown_grace
    for name, connection in config.connections.items():
        if connection.timeout > grace - DRAIN_MARGIN:
            raise ConfigError(
                f"connections.{name}.timeout_seconds: {connection.timeout:g}s does not fit in "
                f"server.shutdown_grace_seconds ({grace:g}s) less {DRAIN_MARGIN:g}s to "
                "answer: lower it or raise the grace"
            )


def _workers(config: Config) -> None:
    workers = config.server.workers
    if workers > 1 and config.idempotency.store == "memory":
        raise ConfigError(
            f"server.workers: {workers} workers cannot share keys kept in memory; "
            'set idempotency.store = "redis"'
        )


def _callers(config: Config) -> None:
    """A gateway without callers is one that asked to be open; names and credentials are
    unique; certificate subjects need client certificates."""
    open_to_all = config.server.allow_unauthenticated
    if not config.callers and not open_to_all:
        raise ConfigError(
            "callers: no [[callers]] configured: add one, or set "
            "server.allow_unauthenticated = true (only where nobody else can reach it)"
        )
    if config.callers and open_to_all:
        raise ConfigError(
            "server.allow_unauthenticated: with [[callers]] configured, a call without "
            "credentials would pass none of their limits; choose one"
        )
    if any(c.cert_subject for c in config.callers) and not config.server.tls.mutual:
        raise ConfigError(
            "server.tls.client_ca_file: callers named by cert_subject need client "
            "certificates, which only mTLS asks for"
        )
    seen: set[tuple[str, str]] = set()
    for i, caller in enumerate(config.callers):
        for key in ("name", "token_sha256", "cert_subject"):
            value = getattr(caller, key)
            if value and (key, value) in seen:
                raise ConfigError(f"callers[{i}].{key}: another caller has the same {key}")
            seen.add((key, value))


def _caller_references(config: Config, job_kinds: Collection[str] | None) -> None:
    """A caller names only connections and job kinds that exist."""
    known = sorted(job_kinds or ())
    for i, caller in enumerate(config.callers):
        missing = sorted(caller.connections - config.connections.keys())
        if missing:
            raise ConfigError(f"callers[{i}].connections: no connection named {missing[0]!r}")
        unknown = sorted(caller.jobs - set(known)) if job_kinds is not None else []
        if unknown:
            raise ConfigError(
                f"callers[{i}].jobs: no job kind {unknown[0]!r} (known: {', '.join(known)})"
            )


def load_config(
    path: Path,
    environ: Mapping[str, str],
    upstreams: OptionSchemas,
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
    """`data` with the `[server]` keys any set override variable names replaced (a
    `server` that is no table is left for the reader to refuse, naming it)."""
    if not isinstance(data.get("server", {}), dict):
        return dict(data)
    server = dict(data.get("server", {}))
    for variable, key in SERVER_OVERRIDES.items():
        if variable in environ:
            server[key] = environ[variable]
    return {**data, "server": server}


def reference_markdown(upstreams: OptionSchemas) -> str:
    """Every key of the file, from the sections' own declarations (docs/CONFIGURATION.md)."""
    sections: list[tuple[str, type[Section], str]] = [
        ("`[server]`", ServerSettings, "server."),
        ("`[connections.NAME]`, every upstream", ConnectionSettings, ""),
        ("`[idempotency]`", IdempotencySettings, "idempotency."),
        ("`[tracing]`", TracingSettings, "tracing."),
        ("`[[callers]]`", CallerSettings, ""),
    ]
    sections += [
        (f'`[connections.NAME]` with `upstream = "{name}"`', schema, "")
        for name, schema in upstreams.items()
    ]
    return "\n".join(
        f"### {title}\n\n{reference_table(keys_of(schema, prefix))}"
        for title, schema, prefix in sections
    )
