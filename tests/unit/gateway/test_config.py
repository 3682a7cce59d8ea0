"""The TOML schema: valid files load into frozen objects, every error names its full key path."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.installed import REGISTRY
from adapters.kiiex import KiiexOptions, PasswordLogin
from gateway.config import (
    SERVER_OVERRIDES,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from gateway.connection import RetrySettings
from gateway.idempotency import IdempotencySettings
from gateway.serving import ServerSettings
from tests.conftest import KIIEX_ENV, kiiex_connection

REPO_ROOT = Path(__file__).resolve().parents[3]


def _parse(
    connections: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = KIIEX_ENV,
    **top: Any,
) -> Config:
    server = {"allow_unauthenticated": True, **top.pop("server", {})}
    data: dict[str, Any] = {"connections": {"k": kiiex_connection()}, "server": server, **top}
    if connections is not None:
        data["connections"] = dict(connections)
    return parse_config(data, environ, REGISTRY.option_schemas)


def _error(
    connections: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = KIIEX_ENV,
    **top: Any,
) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(connections, environ, **top)
    return str(caught.value)


def _minimal(**overrides: Any) -> dict[str, Any]:
    table = {
        "upstream": "kiiex",
        "base_url": "https://kiiex.example/",
        "username_env": "KIIEX_USERNAME",
        "password_env": "KIIEX_PASSWORD",
        **overrides,
    }
    return {key: value for key, value in table.items() if value is not None}


def test_valid_config_loads_into_frozen_objects_with_defaults() -> None:
    config = _parse({"main": _minimal()})

    assert config.server == ServerSettings(allow_unauthenticated=True)
    conn = config.connections["main"]
    assert conn.name == "main"
    assert conn.upstream == "kiiex"
    assert conn.default is False
    assert conn.timeout == 5.0
    assert conn.pool_size == 8
    assert conn.max_in_flight == 32
    assert conn.retry == RetrySettings(max_attempts=3)
    assert isinstance(conn.options, KiiexOptions)
    assert conn.options.base_url == "https://kiiex.example"  # trailing slash dropped
    assert conn.options.login == PasswordLogin("operator", "operator-pass")
    for frozen in (config, config.server, conn, conn.retry):
        with pytest.raises(AttributeError):  # dataclasses' FrozenInstanceError, or msgspec's
            setattr(frozen, "name", "changed")  # noqa: B010


def test_explicit_values_override_defaults() -> None:
    config = _parse(
        {"main": _minimal(timeout_seconds=1.5, pool_size=2, retry={"max_attempts": 5})},
        server={"listen": "0.0.0.0:6000", "shutdown_grace_seconds": 3},
    )
    conn = config.connections["main"]
    assert (conn.timeout, conn.pool_size, conn.retry.max_attempts) == (1.5, 2, 5)
    assert config.server == ServerSettings(
        listen="0.0.0.0:6000", shutdown_grace=3.0, allow_unauthenticated=True
    )


def test_missing_upstream_names_the_key() -> None:
    assert _error({"k": _minimal(upstream=None)}) == "connections.k.upstream: is required"


def test_unknown_upstream_lists_the_choices() -> None:
    message = _error({"k": _minimal(upstream="bitstamp")})
    assert message.startswith("connections.k.upstream: ")
    assert "['kiiex', 'zuora']" in message
    assert "'bitstamp'" in message


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("pool_size", "8", "connections.k.pool_size"),
        ("max_in_flight", 4.5, "connections.k.max_in_flight"),
        ("timeout_seconds", True, "connections.k.timeout_seconds"),
        ("pool_size", True, "connections.k.pool_size"),
        ("default", 1, "connections.k.default"),
        ("base_url", 80, "connections.k.base_url"),
        ("retry", {"max_attempts": "3"}, "connections.k.retry.max_attempts"),
        ("retry", {"backoff_max_seconds": False}, "connections.k.retry.backoff_max_seconds"),
    ],
)
def test_wrong_type_names_the_full_key(key: str, value: Any, path: str) -> None:
    message = _error({"k": _minimal(**{key: value})})
    assert message.startswith(f"{path}: expected ")
    assert "got" in message


def test_toml_bool_is_not_a_number() -> None:
    message = _error({"k": _minimal(timeout_seconds=True)})
    assert message == "connections.k.timeout_seconds: expected a number, got a boolean"


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("pool_size", 0, "connections.k.pool_size"),
        ("timeout_seconds", 0, "connections.k.timeout_seconds"),
        ("timeout_seconds", -1.5, "connections.k.timeout_seconds"),
        ("retry", {"max_attempts": 0}, "connections.k.retry.max_attempts"),
    ],
)
def test_out_of_range_numbers_name_the_key(key: str, value: Any, path: str) -> None:
    assert _error({"k": _minimal(**{key: value})}).startswith(f"{path}: must be ")


@pytest.mark.parametrize(
    "url", ["ftp://kiiex.example", "kiiex.example", "file:///etc/passwd", "http://", ""]
)
def test_non_http_base_url_is_refused(url: str) -> None:
    message = _error({"k": _minimal(base_url=url)})
    assert message.startswith("connections.k.base_url: must be an http(s) URL")


@pytest.mark.parametrize(
    "url", ["https://kiiex.example/api#v1", "https://kiiex.example/api?x=1", "https://k.example?"]
)
def test_a_base_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    # Paths are appended to the base URL: a query or fragment would swallow them.
    message = _error({"k": _minimal(base_url=url)})
    assert message.startswith("connections.k.base_url: no query or fragment")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"connections": {"k": _minimal(timeout_secs=3)}}, "connections.k.timeout_secs"),
        (
            {"connections": {"k": _minimal(retry={"max_atempts": 2})}},
            "connections.k.retry.max_atempts",
        ),
        ({"server": {"listn": "127.0.0.1:1"}}, "server.listn"),
        ({"servers": {}}, "servers"),
        ({"log_level": "debug"}, "log_level"),
    ],
)
def test_unknown_key_is_refused_by_full_path(data: dict[str, Any], path: str) -> None:
    assert _error(**data) == f"{path}: unknown key"


def test_unset_secret_names_the_key_and_the_variable() -> None:
    message = _error(environ={"KIIEX_USERNAME": "operator"})
    assert message == "connections.k.password_env: environment variable KIIEX_PASSWORD is not set"


def test_empty_secret_counts_as_unset() -> None:
    message = _error(environ={**KIIEX_ENV, "KIIEX_USERNAME": ""})
    assert "connections.k.username_env" in message
    assert "KIIEX_USERNAME" in message


def test_two_defaults_for_one_upstream_are_refused() -> None:
    message = _error({"a": _minimal(default=True), "b": _minimal(default=True)})
    assert message.startswith("connections.b.default: ")
    assert "kiiex" in message
    assert "(a)" in message


@pytest.mark.parametrize("top", [{"connections": {}}, {}])
def test_no_connections_is_refused(top: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^connections: at least one connection"):
        parse_config(top, KIIEX_ENV, REGISTRY.option_schemas)


@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost:", "[::1]"])
def test_listen_without_a_port_is_refused(listen: str) -> None:
    message = _error(server={"listen": listen})
    assert message.startswith("server.listen: expected host:port")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_reads_a_toml_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [server]
        listen = "127.0.0.1:7000"

        [connections.kiiex-main]
        upstream = "kiiex"
        default = true
        base_url = "https://kiiex.example"
        username_env = "KIIEX_USERNAME"
        password_env = "KIIEX_PASSWORD"
        [connections.kiiex-main.retry]
        max_attempts = 2

        [[callers]]
        name = "incident-bot"
        token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        jobs = ["kiiex_user_report"]
        """,
    )
    config = load_config(path, KIIEX_ENV, REGISTRY.option_schemas, REGISTRY.job_kinds)
    assert config.server.listen == "127.0.0.1:7000"
    assert config.connections["kiiex-main"].retry.max_attempts == 2
    (caller,) = config.callers
    assert (caller.name, caller.jobs, caller.rate_per_second, caller.burst) == (
        "incident-bot", frozenset({"kiiex_user_report"}), 20.0, 40
    )  # fmt: skip
    assert "operator-pass" in config.secrets


def test_load_config_on_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, KIIEX_ENV, REGISTRY.option_schemas)
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_load_config_on_invalid_toml_names_the_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "[connections.k\nupstream = 'kiiex'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, KIIEX_ENV, REGISTRY.option_schemas)
    assert str(caught.value).startswith(f"{path}: not valid TOML")


def test_default_connection_prefers_the_marked_default() -> None:
    config = _parse({"a": _minimal(), "b": _minimal(default=True), "c": _minimal()})
    chosen = config.default_connection("kiiex")
    assert chosen is not None
    assert chosen.name == "b"


def test_default_connection_is_the_only_connection() -> None:
    chosen = _parse({"solo": _minimal()}).default_connection("kiiex")
    assert chosen is not None
    assert chosen.name == "solo"


def test_default_connection_is_none_when_ambiguous_or_absent() -> None:
    config = _parse({"a": _minimal(), "b": _minimal()})
    assert config.default_connection("kiiex") is None
    assert config.default_connection("zuora") is None


class _AnySecret(Mapping[str, str]):
    """An environment in which every secret variable is set (and no override, no proxy)."""

    def __getitem__(self, key: str) -> str:
        if key in SERVER_OVERRIDES or key.lower().endswith("_proxy"):
            raise KeyError(key)
        return f"secret-for-{key}"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_example_config_parses() -> None:
    config = load_config(
        REPO_ROOT / "config" / "example.toml",
        _AnySecret(),
        REGISTRY.option_schemas,
        REGISTRY.job_kinds,
    )
    assert config.connections
    assert {c.name for c in config.callers} == {"incident-bot"}


def test_idempotency_defaults_to_memory_for_a_day() -> None:
    assert _parse().idempotency == IdempotencySettings(store="memory", redis_url="", ttl=86400.0)


def test_redis_url_comes_from_the_named_variable() -> None:
    environ = {**KIIEX_ENV, "MY_REDIS": "redis://127.0.0.1:6380/2"}
    config = _parse(
        environ=environ,
        idempotency={"store": "redis", "redis_url_env": "MY_REDIS", "ttl_seconds": 60},
    )
    assert config.idempotency == IdempotencySettings(
        store="redis", redis_url_env="MY_REDIS", redis_url="redis://127.0.0.1:6380/2", ttl=60.0
    )
    default = _parse(
        environ={**KIIEX_ENV, "CANCELGW_REDIS_URL": "rediss://r:1"}, idempotency={"store": "redis"}
    )
    assert default.idempotency.redis_url == "rediss://r:1"


@pytest.mark.parametrize(
    ("idempotency", "environ", "message"),
    [
        ({"store": "disk"}, {}, "idempotency.store: must be one of ['memory', 'redis']"),
        ({"store": "redis"}, {}, "idempotency.redis_url_env: environment variable "
                                 "CANCELGW_REDIS_URL is not set"),
        ({"store": "redis"}, {"CANCELGW_REDIS_URL": "http://x"}, "must hold a redis://"),
        ({"ttl_seconds": 0}, {}, "idempotency.ttl_seconds: must be > 0"),
        ({"stor": "memory"}, {}, "idempotency.stor: unknown key"),
    ],
)  # fmt: skip
def test_bad_idempotency_settings_name_the_key(
    idempotency: dict[str, Any], environ: dict[str, str], message: str
) -> None:
    assert message in _error(environ={**KIIEX_ENV, **environ}, idempotency=idempotency)


def test_a_timeout_that_cannot_finish_in_the_drain_is_refused() -> None:
    error = _error({"slow": _minimal(timeout_seconds=9.5)}, server={"shutdown_grace_seconds": 10})
    assert error.startswith("connections.slow.timeout_seconds: 9.5s does not fit in server.")


def test_a_pool_larger_than_the_bulkhead_is_refused() -> None:
    error = _error({"k": _minimal(pool_size=40, max_in_flight=32)})
    assert error.startswith("connections.k.pool_size: keeps 40 connections open")


DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _caller(**fields: Any) -> dict[str, Any]:
    table = {"name": "bot", "token_sha256": DIGEST, "jobs": ["kiiex_user_report"], **fields}
    return {key: value for key, value in table.items() if value is not None}


def _caller_error(*callers: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"connections": {"k": kiiex_connection()}, "callers": list(callers)},
            KIIEX_ENV,
            REGISTRY.option_schemas,
            REGISTRY.job_kinds,
        )
    return str(caught.value)


@pytest.mark.parametrize(
    ("callers", "message"),
    [
        ([_caller(name="bad name")], "callers[0].name: letters, digits"),
        ([_caller(), _caller(token_sha256="0" * 64)], "callers[1].name: another"),
        ([_caller(token_sha256=None, cert_subject="x")], "server.tls.client_ca_file: callers"),
        ([_caller(cert_subject="DNS:x.internal")], "callers[0].cert_subject: the name itself"),
        ([_caller(name="anonymous")], "callers[0].name: 'anonymous' is the name"),
        ([_caller(), _caller(name="b2")], "callers[1].token_sha256: another caller"),
        ([_caller(token_sha256="secret-token")], "callers[0].token_sha256: the SHA-256"),
        ([_caller(token_sha256=DIGEST.upper())], "callers[0].token_sha256: the SHA-256"),
        ([_caller(token_sha256=None)], "callers[0].token_sha256: give token_sha256 or cert"),
        ([_caller(jobs=[])], "callers[0].jobs: list the job kinds"),
        ([_caller(jobs=["kiiex_typo"])], "callers[0].jobs: no job kind 'kiiex_typo'"),
        ([_caller(jobs="kiiex_user_report")], "callers[0].jobs: expected a list"),
        ([_caller(connections=["nope"])], "callers[0].connections: no connection named 'nope'"),
        ([_caller(rate_per_second=0)], "callers[0].rate_per_second: must be > 0"),
        ([_caller(burst=0)], "callers[0].burst: must be >= 1"),
        ([_caller(extra=1)], "callers[0].extra: unknown key"),
    ],
)
def test_bad_callers_are_refused_naming_the_key(
    callers: list[dict[str, Any]], message: str
) -> None:
    assert _caller_error(*callers).startswith(message)


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"cert_file": "__FILE__"}, "server.tls.cert_file: give both cert_file and key_file"),
        ({"client_ca_file": "__FILE__"}, "server.tls.client_ca_file: needs cert_file"),
        ({"cert_file": "/no/such.crt", "key_file": "__FILE__"}, "server.tls.cert_file: cannot"),
        ({"cert": "x"}, "server.tls.cert: unknown key"),
    ],
)
def test_bad_tls_settings_name_the_key(tls: dict[str, str], message: str, tmp_path: Path) -> None:
    real = tmp_path / "some.pem"
    real.write_text("pem")
    tls = {k: str(real) if v == "__FILE__" else v for k, v in tls.items()}
    assert _error(server={"allow_unauthenticated": True, "tls": tls}).startswith(message)


def test_health_listen_may_not_share_a_port() -> None:
    error = _error(server={"listen": "0.0.0.0:7000", "health_listen": "0.0.0.0:7000"})
    assert error.endswith("port 7000 is given to two listeners")


def test_callers_with_unauthenticated_calls_allowed_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"server\.allow_unauthenticated: with"):
        parse_config(
            {"server": {"allow_unauthenticated": True}, "connections": {"k": kiiex_connection()},
             "callers": [_caller()]},
            KIIEX_ENV,
            REGISTRY.option_schemas,
        )  # fmt: skip


def test_a_certificate_and_key_that_do_not_match_are_refused(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    one, other = ca.issue_cert("a.internal"), ca.issue_cert("b.internal")
    cert, key = tmp_path / "a.crt", tmp_path / "b.key"
    one.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    tls = {"cert_file": str(cert), "key_file": str(key)}
    assert _error(server={"allow_unauthenticated": True, "tls": tls}).startswith(
        "server.tls.cert_file: the certificate and key do not load as a pair"
    )


def test_workers_default_to_one_and_take_a_number() -> None:
    assert _parse().server.workers == 1
    redis = {"store": "redis", "redis_url_env": "CANCELGW_REDIS_URL"}
    environ = {**KIIEX_ENV, "CANCELGW_REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert _parse(environ=environ, server={"workers": 4}, idempotency=redis).server.workers == 4


@pytest.mark.parametrize("workers", [0, 65, -1])
def test_workers_out_of_range_name_the_key(workers: int) -> None:
    assert _error(server={"workers": workers}).startswith("server.workers: must be ")


def test_workers_with_keys_in_memory_are_refused_naming_the_key() -> None:
    message = _error(server={"workers": 2})
    assert message.startswith("server.workers: 2 workers cannot share keys kept in memory")
    assert 'idempotency.store = "redis"' in message


def test_environment_overrides_the_server_keys_of_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [server]
        listen = "127.0.0.1:7000"
        allow_unauthenticated = true
        [connections.k]
        upstream = "kiiex"
        base_url = "https://kiiex.example"
        username_env = "KIIEX_USERNAME"
        password_env = "KIIEX_PASSWORD"
        """,
    )
    environ = {
        **KIIEX_ENV,
        "CANCELGW_LISTEN": "127.0.0.1:7100",
        "CANCELGW_METRICS_LISTEN": "",
        "CANCELGW_LOG_LEVEL": "debug",
    }
    config = load_config(path, environ, REGISTRY.option_schemas, REGISTRY.job_kinds)
    server = config.server
    assert (server.listen, server.metrics_listen, server.log_level) == (
        "127.0.0.1:7100",
        "",
        "DEBUG",
    )
    with pytest.raises(ConfigError, match=r"^server\.listen: "):
        load_config(path, {**environ, "CANCELGW_LISTEN": "nowhere"}, REGISTRY.option_schemas)


def test_event_loop_defaults_to_uvloop_and_takes_asyncio() -> None:
    assert _parse().server.event_loop == "uvloop"
    assert _parse(server={"event_loop": "asyncio"}).server.event_loop == "asyncio"
    assert _error(server={"event_loop": "trio"}).startswith("server.event_loop: must be one of")


def test_uvloop_asked_for_but_not_installed_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert _error() == 'server.event_loop: uvloop is not installed; set "asyncio"'
    assert _parse(server={"event_loop": "asyncio"}).server.event_loop == "asyncio"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"user_id": 7}, "connections.k.user_id: only with api_key_env"),
        ({"api_secret_env": "KIIEX_PASSWORD"}, "connections.k.api_secret_env: only with api_key"),
        (
            {"api_key_env": "KIIEX_USERNAME", "api_secret_env": "KIIEX_PASSWORD", "user_id": 7},
            "connections.k.username_env: not with api_key_env",
        ),
        (
            {
                "username_env": None,
                "password_env": None,
                "api_key_env": "KIIEX_USERNAME",
                "api_secret_env": "KIIEX_PASSWORD",
                "user_id": 0,
            },
            "connections.k.user_id: must be from 1",
        ),
        ({"token_header": ""}, "connections.k.token_header: must be an HTTP header name"),
        ({"token_header": "a b"}, "connections.k.token_header: must be an HTTP header name"),
        ({"token_field": ""}, "connections.k.token_field: name the answer's field"),
    ],
)
def test_a_kiiex_login_takes_the_keys_of_one_family(
    overrides: dict[str, Any], message: str
) -> None:
    assert _error({"k": _minimal(**overrides)}).startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"idempotency": {"store": "redis", "redis_url_env": ""}}, "idempotency.redis_url_env:"),
        ({"connections": {"k": "x"}}, "connections.k: expected a table"),
        ({"server": {"listen": "h:\u00b2"}}, "server.listen: expected host:port"),
        ({"server": {"listen": "h:\u0661\u0662"}}, "server.listen: expected host:port"),
        ({"server": {"tls": {"cert_file": "a\x00", "key_file": "b"}}}, "server.tls.cert_file:"),
        (
            {"callers": [{"name": "x", "token_sha256": "0" * 64, "jobs": [1]}]},
            "callers[0].jobs[0]: expected a string",
        ),
        (
            {
                "callers": [
                    {
                        "name": "x",
                        "token_sha256": "0" * 64,
                        "jobs": ["kiiex_quote"],
                        "rate_per_second": float("inf"),
                    }
                ]
            },
            "callers[0].rate_per_second: must be",
        ),
        (
            {"connections": {"k": {**_minimal(), "timeout_seconds": float("inf")}}},
            "connections.k.timeout_seconds: must be <= 1000000000",
        ),
        (
            {"connections": {"k": {**_minimal(), "max_in_flight": 2**31}}},
            "connections.k.max_in_flight: must be <= 2147483647",
        ),
        ({"connections": {"k": {**_minimal(), "name": "x"}}}, "connections.k.name: unknown key"),
        ({"idempotency": {"redis_url": "redis://x"}}, "idempotency.redis_url: unknown key"),
    ],
)
def test_hostile_values_are_config_errors_naming_the_key(
    data: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"server": {"allow_unauthenticated": True}}
    base["connections"] = {"k": _minimal()}
    merged = {**base, **data}
    if "server" in data:
        merged["server"] = {"allow_unauthenticated": True, **data["server"]}
    with pytest.raises(ConfigError) as caught:
        parse_config(merged, KIIEX_ENV, REGISTRY.option_schemas, REGISTRY.job_kinds)
    assert str(caught.value).startswith(message)


def test_a_server_that_is_no_table_is_refused_by_name_even_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('server = 5\n[connections.k]\nupstream = "kiiex"\n')
    with pytest.raises(ConfigError, match=r"^server: expected a table"):
        load_config(path, {"CANCELGW_LISTEN": "127.0.0.1:1"}, REGISTRY.option_schemas)


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [("http://kiiex.example", False, True), ("http://kiiex.example", True, False),
     ("http://127.0.0.1:8080", False, False), ("http://localhost:8080", False, False),
     ("http://[::1]:8080", False, False), ("https://kiiex.example", False, False)],
)  # fmt: skip
def test_plaintext_to_a_host_that_is_not_loopback_needs_allow_plaintext(
    url: str, allowed: bool, refused: bool
) -> None:
    connection = _minimal(base_url=url, allow_plaintext=allowed)
    if refused:
        assert _error({"k": connection}).startswith("connections.k.allow_plaintext: ")
    else:
        assert _parse({"k": connection}).connections["k"].allow_plaintext is allowed


def test_a_secret_comes_from_its_file_less_one_trailing_newline(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("from-a-volume\n")
    config = _parse({"k": _minimal(password_env=None, password_file=str(password))})
    assert config.connections["k"].options.login == PasswordLogin("operator", "from-a-volume")
    assert "from-a-volume" in config.secrets  # scrubbed like any other


@pytest.mark.parametrize(
    ("content", "keys", "says"),
    [
        ("x\n", {"password_file": "__file__"},
         "connections.k.password_file: give password_env or password_file, not both"),
        ("\n", {"password_env": None, "password_file": "__file__"},
         "connections.k.password_file: file __file__ is set but empty"),
        (None, {"password_env": None, "password_file": "__file__"},
         "connections.k.password_file: cannot read __file__"),
    ],
)  # fmt: skip
def test_a_secret_file_is_one_of_two_and_never_empty(
    tmp_path: Path, content: str | None, keys: dict[str, Any], says: str
) -> None:
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    resolved = {k: str(secret) if v == "__file__" else v for k, v in keys.items()}
    assert _error({"k": _minimal(**resolved)}).startswith(says.replace("__file__", str(secret)))


def test_an_env_key_holding_no_variable_name_is_refused_without_echoing_it() -> None:
    message = _error({"k": _minimal(password_env="hunter2!pasted-secret")})
    assert message.startswith("connections.k.password_env: expected the name of an environment")
    assert "hunter2" not in message


def test_a_variable_set_but_empty_is_said_to_be_empty() -> None:
    message = _error({"k": _minimal()}, environ={**KIIEX_ENV, "KIIEX_PASSWORD": ""})
    assert (
        message
        == "connections.k.password_env: environment variable KIIEX_PASSWORD is set but empty"
    )
    unset = {k: v for k, v in KIIEX_ENV.items() if k != "KIIEX_PASSWORD"}
    assert _error({"k": _minimal()}, environ=unset).endswith("KIIEX_PASSWORD is not set")


def test_the_redis_url_and_the_proxy_credentials_come_from_files_too(tmp_path: Path) -> None:
    url, credentials = tmp_path / "redis-url", tmp_path / "egress"
    url.write_text("redis://127.0.0.1:6390/1\n")
    credentials.write_text("egress:pass-from-file\n")
    config = _parse(
        {"k": _minimal(base_url="https://kiiex.example", proxy="http://p:3128",
                       proxy_credentials_file=str(credentials))},
        idempotency={"store": "redis", "redis_url_file": str(url)},
    )  # fmt: skip
    assert config.idempotency.redis_url == "redis://127.0.0.1:6390/1"
    assert config.connections["k"].egress.credentials == "egress:pass-from-file"
    assert {"redis://127.0.0.1:6390/1", "egress:pass-from-file"} <= config.secrets
    both = {"store": "redis", "redis_url_file": str(url), "redis_url_env": "X"}
    assert _error(idempotency=both).startswith("idempotency.redis_url_file: give redis_url_env")


@pytest.mark.parametrize(
    ("url", "says"),
    [("https://user:pw@kiiex.example", "no user info"),
     ("https://kiiex.example:99999", "not a usable host and port"),
     ("https://" + "x" * 64 + ".example", "not a usable host and port")],
)  # fmt: skip
def test_a_base_url_carries_no_credentials_and_a_usable_host(url: str, says: str) -> None:
    message = _error({"k": _minimal(base_url=url)})
    assert message.startswith(f"connections.k.base_url: {says}")
    assert "pw@" not in message


def test_plaintext_through_a_proxy_needs_allow_plaintext_even_to_loopback() -> None:
    environ = {**KIIEX_ENV, "http_proxy": "http://proxy.corp:3128"}
    message = _error({"k": _minimal(base_url="http://127.0.0.1:8080")}, environ=environ)
    assert message.startswith("connections.k.allow_plaintext: http://127.0.0.1:8080 is http:// "
                              "through proxy proxy.corp:3128 (from http_proxy)")  # fmt: skip
    direct = _minimal(base_url="http://127.0.0.1:8080", proxy="none")
    assert _parse({"k": direct}, environ=environ).connections["k"].egress.proxy == ""


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"\xffpassword", "is not UTF-8 text"), (b"pass\x00word", "holds a NUL byte"),
     (b"x" * 70_000, "holds more than 65536 bytes")],
)  # fmt: skip
def test_a_secret_file_is_bounded_text_and_never_quoted(
    tmp_path: Path, content: bytes, says: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    message = _error({"k": _minimal(password_env=None, password_file=str(secret))})
    assert message.startswith("connections.k.password_file: ")
    assert says in message
    assert "password" not in message.partition("secret")[2]


def test_a_secret_file_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    message = _error({"k": _minimal(password_env=None, password_file=str(fifo))})
    assert message == f"connections.k.password_file: {fifo} is not a regular file"
