"""The `[server]` section: how the process serves (listeners, TLS, drain grace, workers,
event loop, log level)."""

from __future__ import annotations

import importlib.util
from typing import Annotated

from msgspec import Meta, field

from gateway import tls
from gateway.schema import Seconds, Section, about, address, choice, invalid, settle

LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_LOOPS = ("uvloop", "asyncio")


class TlsSettings(Section, frozen=True):
    """The gRPC port's certificate and key (PEM files); with `client_ca_file`, client
    certificates signed by it are required (mTLS). The files are read when used."""

    cert_file: Annotated[str, about("PEM certificate (chain) of the gRPC port")] = ""
    key_file: Annotated[str, about("its PEM private key")] = ""
    client_ca_file: Annotated[
        str, about("set: client certificates signed by this CA are required (mTLS)")
    ] = ""

    def __post_init__(self) -> None:
        if not self.cert_file and not self.key_file:
            if self.client_ca_file:
                raise invalid("client_ca_file", "needs cert_file and key_file")
            return
        if not self.cert_file or not self.key_file:
            raise invalid("cert_file", "give both cert_file and key_file")
        tls.check_pair(self.cert_file, self.key_file)
        if self.client_ca_file:
            tls.check_ca_bundle("client_ca_file", self.client_ca_file)

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_file)


class ServerSettings(Section, frozen=True):
    listen: Annotated[str, about("gRPC address (`host:port`)")] = "127.0.0.1:50051"
    shutdown_grace: Annotated[
        Seconds,
        about(
            "on SIGTERM/SIGINT the drain ends within this; every connection's "
            "`timeout_seconds` must be at least 1 s less"
        ),
    ] = field(default=10.0, name="shutdown_grace_seconds")
    metrics_listen: Annotated[
        str,
        about('`host:port` of the Prometheus `/metrics` endpoint (port 0: any free; "": off)'),
    ] = "127.0.0.1:9464"
    log_level: Annotated[
        str, about("level of the JSON log lines on stderr: debug, info, warning or error")
    ] = "info"
    allow_unauthenticated: Annotated[
        bool,
        about(
            "serve calls that present no credentials (as `anonymous`); without it, a config "
            "with no `[[callers]]` refuses to start"
        ),
    ] = False
    reflection: Annotated[bool, about("serve gRPC reflection (the schema, never data)")] = True
    tls: TlsSettings = TlsSettings()
    health_listen: Annotated[
        str, about('a plaintext port serving only the health service, for probes ("": off)')
    ] = ""
    workers: Annotated[
        int,
        Meta(ge=1, le=64),
        about(
            "gateway processes sharing the gRPC port (SO_REUSEPORT); more than 1 needs "
            '`idempotency.store = "redis"`'
        ),
    ] = 1
    event_loop: Annotated[
        str, about("`uvloop` (a few per cent less CPU per call) or `asyncio`")
    ] = "uvloop"

    def __post_init__(self) -> None:
        address("listen", self.listen)
        address("metrics_listen", self.metrics_listen, optional=True)
        address("health_listen", self.health_listen, optional=True)
        settle(self, "log_level", choice("log_level", self.log_level.lower(), LOG_LEVELS).upper())
        choice("event_loop", self.event_loop, EVENT_LOOPS)
        if self.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise invalid("event_loop", 'uvloop is not installed; set "asyncio"')
        ports = {
            key: port
            for key in ("listen", "metrics_listen", "health_listen")
            if (port := str(getattr(self, key)).rpartition(":")[2]) not in ("", "0")
        }
        for key, port in ports.items():
            if list(ports.values()).count(port) > 1:
                raise invalid(key, f"port {port} is given to two listeners")
