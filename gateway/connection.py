"""The keys every connection has, whatever its upstream: which upstream, timeouts, the
in-flight bound and pool, retries, the circuit breaker, confirmation polling. What only one
upstream reads is declared by its package (`Upstream.options`) and lands in `options`."""

from __future__ import annotations

import ssl
from typing import Annotated, Any, ClassVar

from msgspec import Meta, field

from gateway import tls
from gateway.egress import Egress
from gateway.schema import Count, Seconds, Secret, Section, about, invalid, settle
from gateway.tls import ClientCertificate


class RetrySettings(Section, frozen=True):
    max_attempts: Annotated[
        int, Meta(ge=1, le=10), about("attempts for a call whose every leg failed retryably")
    ] = 3
    backoff_initial: Annotated[
        Seconds, about("full-jitter exponential backoff: the first pause's ceiling")
    ] = field(default=0.1, name="backoff_initial_seconds")
    backoff_max: Annotated[
        Seconds, about("the longest pause; an upstream's longer `Retry-After` is passed on")
    ] = field(default=2.0, name="backoff_max_seconds")


class BreakerSettings(Section, frozen=True):
    """The circuit breaker of one connection (see `gateway.resilience.CircuitBreaker`)."""

    failure_threshold: Annotated[
        Count,
        about("outages in a row (UPSTREAM_UNAVAILABLE, UPSTREAM_ERROR, TIMEOUT) that open it"),
    ] = 5
    reset_seconds: Annotated[Seconds, about("open this long; then one trial call decides")] = 30.0


class ConnectionSettings(Section, frozen=True):
    """One named upstream connection (`[connections.NAME]`)."""

    derived: ClassVar[frozenset[str]] = frozenset(
        {"name", "options", "client_certificate", "egress"}
    )

    upstream: Annotated[str, about("the upstream it reaches: a registered upstream's name")]
    default: Annotated[
        bool,
        about(
            "the connection used when a request leaves `connection` empty (a sole "
            "connection of an upstream is its default)"
        ),
    ] = False
    timeout: Annotated[
        Seconds, about("per upstream call, further capped by the caller's deadline")
    ] = field(default=5.0, name="timeout_seconds")
    connect_timeout: Annotated[
        Seconds,
        about(
            "getting a connection (TCP, a proxy's CONNECT, TLS): a connect that does not "
            "complete in time never sent anything, and is retried",
            default="min(3, `timeout_seconds`)",
        ),
    ] = field(default=0.0, name="connect_timeout_seconds")
    max_in_flight: Annotated[
        Count,
        about(
            "upstream requests (cancel attempts and confirmation reads) in flight at once; "
            "waiting is for a slot only, counted against the caller's deadline"
        ),
    ] = 32
    pool_size: Annotated[
        Count,
        about("HTTP connections kept open between calls", default="min(8, `max_in_flight`)"),
    ] = 0
    retry: RetrySettings = RetrySettings()
    confirm_timeout: Annotated[
        Seconds, about("how long `wait_for_confirmation` polls the read API")
    ] = field(default=10.0, name="confirm_timeout_seconds")
    confirm_interval: Annotated[Seconds, about("pause between confirmation reads")] = field(
        default=0.25, name="confirm_interval_seconds"
    )
    breaker: BreakerSettings = BreakerSettings()
    ca_file: Annotated[
        str,
        about("a PEM bundle this connection trusts, instead of the system roots (none: those)"),
    ] = ""
    client_cert_file: Annotated[
        str, about("a client certificate (PEM), for upstreams that require mutual TLS")
    ] = ""
    client_key_file: Annotated[str, about("its private key (PEM)")] = ""
    proxy: Annotated[
        str | None,
        about(
            "how it leaves: absent, the environment (HTTPS_PROXY, http_proxy, ALL_PROXY, "
            'NO_PROXY, as curl reads them); "none", direct; or the proxy\'s http(s) URL, '
            "without credentials"
        ),
    ] = None
    proxy_credentials: Annotated[
        Secret | None,
        about("`user:password` for the proxy (Proxy-Authorization: Basic): its variable"),
    ] = field(default=None, name="proxy_credentials_env")
    allow_plaintext: Annotated[
        bool, about("allow an http:// base URL to a host that is not loopback")
    ] = False
    client_certificate: ClientCertificate | None = None
    """What the client certificate says of itself: read when the file is checked."""
    egress: Egress = Egress()
    """How it leaves (`gateway.egress`): decided when the file is read."""
    name: str = ""
    """The table's name (`billing-eu`): set by the reader, never a key."""
    options: Any = None
    """What only its upstream reads: an instance of that upstream's `options` section."""

    def __post_init__(self) -> None:
        if self.connect_timeout == 0:  # not given
            settle(self, "connect_timeout", min(3.0, self.timeout))
        elif self.connect_timeout > self.timeout:
            raise invalid(
                "connect_timeout_seconds",
                f"{self.connect_timeout:g}s is more than timeout_seconds ({self.timeout:g}s)",
            )
        self._check_trust()
        if self.proxy_credentials is not None and ":" not in self.proxy_credentials:
            raise invalid("proxy_credentials_env", "must hold user:password")
        if self.pool_size == 0:  # not given
            settle(self, "pool_size", min(8, self.max_in_flight))
        elif self.pool_size > self.max_in_flight:
            raise invalid(
                "pool_size",
                f"keeps {self.pool_size} connections open, more than max_in_flight "
                f"({self.max_in_flight}) can use",
            )

    def tls_context(self) -> ssl.SSLContext | None:
        """Its TLS context: `ca_file` instead of the default roots, its client certificate;
        None (the HTTP engine's default) without both."""
        return tls.client_context(self.ca_file, self.client_cert_file, self.client_key_file)

    def _check_trust(self) -> None:
        if self.ca_file:
            tls.check_ca_bundle("ca_file", self.ca_file)
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise invalid("client_cert_file", "give both client_cert_file and client_key_file")
        if self.client_cert_file:
            checked = tls.check_client_pair(self.client_cert_file, self.client_key_file)
            settle(self, "client_certificate", checked)
