"""`cancelgw check --config FILE [--connect]`: a preflight before a rollout.

Without `--connect` it validates all that start-up validates (the same reader, every problem
a line naming its key) and prints one line per connection: upstream, base URL, how it leaves,
what it trusts, its client certificate, its kind of credentials; never a secret value. With
`--connect` it also goes the way of every connection, step by step: DNS, TCP (to the proxy,
when there is one), the TLS handshake (through the proxy's tunnel) and the upstream's login,
never touching a job; a line each with its time, or what failed.

Exit 0 when all is well; 1 when the config has a problem or a connection fails; 2 when the
command itself is misused.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import certifi

from gateway.app.serve import connection_fields
from gateway.config import Config, ConfigError, load_config
from gateway.connection import ConnectionSettings
from gateway.registry import Registry
from gateway.upstream import Adapter

Step = Callable[[], Awaitable[str]]


def run_check(config_path: Path, registry: Registry, *, connect: bool) -> int:
    try:
        config = load_config(config_path, os.environ, registry.option_schemas, registry.job_kinds)
    except ConfigError as error:
        for problem in str(error).splitlines():
            print(f"problem: {problem}")
        return 1
    for settings in config.connections.values():
        print(_described(settings))
    if not connect:
        print(f"ok: {config_path} is valid ({len(config.connections)} connections)")
        return 0
    return asyncio.run(_connect_all(config, registry))


def _described(settings: ConnectionSettings) -> str:
    fields = connection_fields(settings)
    auth = str(getattr(settings.options, "auth", "")) or "no credentials"
    return (
        f"connection {fields['connection']}: {fields['upstream']} at {fields['base_url']}, "
        f"leaves {fields['leaves']}, trusts {fields['trust']}, client certificate "
        f"{fields['client_certificate']}, auth {auth}"
    )


async def _connect_all(config: Config, registry: Registry) -> int:
    failed = 0
    for name, settings in config.connections.items():
        upstream = registry.upstreams[settings.upstream]
        adapter = upstream.connect(settings, None)
        try:
            steps = _steps(settings)
            steps.append(("login", partial(_login, adapter, settings)))
            for step, run in steps:
                ok = await _step(name, step, run)
                if not ok:
                    failed += 1
                    break
        finally:
            await adapter.aclose()
    return 1 if failed else 0


async def _step(connection: str, step: str, run: Step) -> bool:
    started = time.monotonic()
    try:
        said = await run()
    except (OSError, ssl.SSLError, TimeoutError, ValueError, UnicodeError, _Refused) as error:
        print(f"{connection} {step}: FAILED {_why(error)}")
        return False
    print(f"{connection} {step}: ok in {(time.monotonic() - started) * 1000:.1f} ms {said}")
    return True


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return f"{type(error).__name__}: {error}"


class _Refused(Exception):
    """A step the other side answered with a refusal (a proxy's CONNECT, a login)."""


def _steps(settings: ConnectionSettings) -> list[tuple[str, Step]]:
    target = urlsplit(str(getattr(settings.options, "base_url", "")))
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    proxy = urlsplit(settings.egress.proxy) if settings.egress.proxy else None
    first_host = proxy.hostname or "" if proxy else host
    first_port = (proxy.port or 80) if proxy else port
    timeout = settings.connect_timeout
    steps: list[tuple[str, Step]] = [
        ("dns", lambda: _resolve(first_host, first_port, timeout)),
        ("tcp", lambda: _tcp(first_host, first_port, timeout, via=bool(proxy))),
    ]
    if target.scheme == "https":
        steps.append(("tls", lambda: _tls(settings, host, port, first_host, first_port)))
    return steps


async def _resolve(host: str, port: int, timeout: float) -> str:
    async with asyncio.timeout(timeout):
        found = await asyncio.get_running_loop().getaddrinfo(host, port)
    return f"{host} is {sorted({str(entry[4][0]) for entry in found})[0]}"


async def _tcp(host: str, port: int, timeout: float, *, via: bool) -> str:
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return f"to the proxy {host}:{port}" if via else f"to {host}:{port}"


async def _tls(settings: ConnectionSettings, host: str, port: int, hop: str, hop_port: int) -> str:
    """The handshake with the upstream's name and this connection's trust, through the
    proxy's tunnel when there is one."""
    context = settings.tls_context() or ssl.create_default_context(cafile=certifi.where())
    async with asyncio.timeout(settings.connect_timeout):
        reader, writer = await asyncio.open_connection(hop, hop_port)
        try:
            if settings.egress.proxy:
                await _tunnel(reader, writer, f"{host}:{port}", settings.egress.credentials)
            await writer.start_tls(context, server_hostname=host)
            peer = writer.get_extra_info("peercert") or {}
            await _refusal_after_handshake(reader)
        finally:
            writer.close()
    subject = dict(pair for rdn in peer.get("subject", ()) for pair in rdn)
    return f"verified {subject.get('commonName', host)}, {writer.get_extra_info('cipher')[1]}"


# Under TLS 1.3 a server judges the client's certificate after the client's side of the
# handshake is done: its refusal is an alert that arrives just after.
_ALERT_WAIT = 0.5


async def _refusal_after_handshake(reader: asyncio.StreamReader) -> None:
    """Raises the server's alert if one follows the handshake; quiet is agreement."""
    try:
        async with asyncio.timeout(_ALERT_WAIT):
            await reader.read(1)
    except TimeoutError:
        return


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, credentials: str
) -> None:
    auth = ""
    if credentials:
        token = base64.b64encode(credentials.encode("latin-1")).decode()  # as the engine
        auth = f"Proxy-Authorization: Basic {token}\r\n"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    status = (await reader.readline()).decode(errors="replace").split()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass  # the proxy's headers
    if len(status) < 2 or status[1] != "200":
        raise _Refused(f"the proxy answered the CONNECT with {' '.join(status[1:3]) or 'nothing'}")


async def _login(adapter: Adapter, settings: ConnectionSettings) -> str:
    checked = await adapter.preflight(timeout=settings.timeout)
    if not checked.ok:
        raise _Refused(checked.detail)
    return str(checked.detail)


def check_main(config_path: Path | None, registry: Registry, *, connect: bool) -> int:
    if config_path is None:
        print("error: give --config FILE or set CANCELGW_CONFIG", file=sys.stderr)
        return 2
    return run_check(config_path, registry, connect=connect)
