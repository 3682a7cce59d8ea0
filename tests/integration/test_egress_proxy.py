"""Out through a company's egress proxy: a real tinyproxy with BasicAuth on loopback, and a
TLS upstream behind it (certificates made at test time). HTTPS goes through a CONNECT
tunnel with TLS verified end to end; the proxy comes from the `proxy` key or from
HTTPS_PROXY (NO_PROXY skips it); wrong credentials are CONNECTION_MISCONFIGURED and leave the
circuit closed; a proxy that is down is unreachable and never a direct connection."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2 as pb
from gateway.app.serve import GatewayServer
from gateway.config import ConfigError
from gateway.resilience import CircuitState
from tests.conftest import KIIEX_ENV, kiiex_connection, make_config
from tests.grpc_helpers import report_request
from tests.processes import kiiex_gateway_config
from tests.proxy_server import ProxyServer
from tests.tls_front import TlsFront

Start = Callable[..., Awaitable[tuple[Any, GatewayServer]]]
TIMING = {"timeout_seconds": 2, "connect_timeout_seconds": 1}


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyServer]:
    server = ProxyServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(tmp_path: Path, kiiex_http: LoopbackServer) -> Iterator[tuple[TlsFront, str]]:
    """The KIIEX simulator behind TLS for `localhost`, and the CA file that trusts it."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    cert, key, ca_file = tmp_path / "up.crt", tmp_path / "up.key", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    port = int(kiiex_http.url.rsplit(":", 1)[1])
    with TlsFront(port, cert_file=cert, key_file=key) as front:
        yield front, str(ca_file)


async def _cancel(
    start: Start, sim: KiiexSimulator, url: str, environ: dict[str, str] | None = None, **keys: Any
) -> tuple[pb.CancelJobResponse, GatewayServer]:
    config = make_config(
        {"k": kiiex_connection(url, **TIMING, **keys)}, environ={**KIIEX_ENV, **(environ or {})}
    )
    stub, server = await start(config)
    return await stub.CancelJob(report_request(sim.add_report()), timeout=10), server


async def test_the_proxy_key_tunnels_https_with_its_credentials(
    start_gateway: Start,
    kiiex_sim: KiiexSimulator,
    proxy: ProxyServer,
    upstream: tuple[TlsFront, str],
) -> None:
    front, ca_file = upstream
    response, server = await _cancel(
        start_gateway, kiiex_sim, front.url,
        environ={"EGRESS_CREDENTIALS": f"{proxy.user}:{proxy.password}"},
        ca_file=ca_file, proxy=proxy.url, proxy_credentials_env="EGRESS_CREDENTIALS",
    )  # fmt: skip
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert f"localhost:{front.port}" in proxy.connects()
    assert kiiex_sim.calls["CancelUserReport"] == 1
    leaves = server.config.connections["k"].egress.describe()
    assert leaves == f"proxy 127.0.0.1:{proxy.port} (from the proxy key, with credentials)"


async def test_https_proxy_from_the_environment_is_used_as_curl_uses_it(
    start_gateway: Start,
    kiiex_sim: KiiexSimulator,
    proxy: ProxyServer,
    upstream: tuple[TlsFront, str],
) -> None:
    front, ca_file = upstream
    with_auth = proxy.url.replace("http://", f"http://{proxy.user}:{proxy.password}@")
    response, server = await _cancel(
        start_gateway, kiiex_sim, front.url, environ={"HTTPS_PROXY": with_auth}, ca_file=ca_file
    )
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert f"localhost:{front.port}" in proxy.connects()
    assert "from HTTPS_PROXY, with credentials" in server.config.connections["k"].egress.describe()
    assert proxy.password in server.config.secrets  # scrubbed like any configured secret


async def test_no_proxy_skips_the_environments_proxy(
    start_gateway: Start,
    kiiex_sim: KiiexSimulator,
    proxy: ProxyServer,
    upstream: tuple[TlsFront, str],
) -> None:
    front, ca_file = upstream
    environ = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "example.com,localhost"}
    response, server = await _cancel(start_gateway, kiiex_sim, front.url, environ, ca_file=ca_file)
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert proxy.connects() == []
    assert server.config.connections["k"].egress.describe() == "direct"


async def test_wrong_proxy_credentials_are_misconfigured_and_leave_the_circuit_closed(
    start_gateway: Start,
    kiiex_sim: KiiexSimulator,
    proxy: ProxyServer,
    upstream: tuple[TlsFront, str],
) -> None:
    front, ca_file = upstream
    config = make_config(
        {"k": kiiex_connection(front.url, **TIMING, ca_file=ca_file, proxy=proxy.url,
                               proxy_credentials_env="EGRESS_CREDENTIALS")},
        environ={**KIIEX_ENV, "EGRESS_CREDENTIALS": f"{proxy.user}:not-the-password"},
    )  # fmt: skip
    stub, server = await start_gateway(config)
    for _ in range(20):
        response = await stub.CancelJob(report_request(kiiex_sim.add_report()), timeout=10)
        assert (response.reason, response.retryable, response.attempts) == (
            pb.REASON_CONNECTION_MISCONFIGURED, False, 1
        )  # fmt: skip
        assert [a.delivery for a in response.attempt_history] == [pb.DELIVERY_NOT_SENT]
    # 407 by the standard; tinyproxy answers wrong credentials with 401.
    assert "the proxy answered the CONNECT with HTTP 401: check the proxy" in response.message
    assert "not-the-password" not in response.message
    assert server.router.routes["k"].breaker.state is CircuitState.CLOSED
    assert sum(kiiex_sim.calls.values()) == 0  # never a direct connection instead


async def test_a_proxy_that_is_down_is_unreachable_and_never_bypassed(
    start_gateway: Start, kiiex_sim: KiiexSimulator, refused_url: str,
    upstream: tuple[TlsFront, str],
) -> None:  # fmt: skip
    front, ca_file = upstream
    response, _ = await _cancel(
        start_gateway, kiiex_sim, front.url, ca_file=ca_file, proxy=refused_url
    )
    assert (response.outcome, response.reason, response.retryable) == (
        pb.OUTCOME_FAILED, pb.REASON_UPSTREAM_UNAVAILABLE, True
    )  # fmt: skip
    assert [a.delivery for a in response.attempt_history] == [pb.DELIVERY_NOT_SENT] * 3
    assert sum(kiiex_sim.calls.values()) == 0


def test_a_proxy_url_that_carries_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as refused:
        make_config(
            {"k": kiiex_connection("https://kiiex.example", proxy="http://u:s3cr3t@p:3128")}
        )
    assert str(refused.value).startswith("connections.k.proxy: carries credentials")
    assert "s3cr3t" not in str(refused.value)


async def test_check_connect_goes_through_the_proxys_tunnel_to_a_verified_tls_upstream(
    tmp_path: Path, kiiex_sim: KiiexSimulator, proxy: ProxyServer, upstream: tuple[TlsFront, str]
) -> None:
    front, ca_file = upstream
    text = kiiex_gateway_config(front.url, ca_file=ca_file, proxy=proxy.url,
                                proxy_credentials_env="EGRESS_CREDENTIALS")  # fmt: skip
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    environ = {**KIIEX_ENV, "PATH": "/usr/bin:/bin",
               "EGRESS_CREDENTIALS": f"{proxy.user}:{proxy.password}"}  # fmt: skip
    checked = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "cancelgw"), "check", "--config", str(config),
        "--connect", stdout=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    out = (await asyncio.wait_for(checked.communicate(), 30))[0].decode()
    assert checked.returncode == 0, out
    assert f"leaves proxy 127.0.0.1:{proxy.port} (from the proxy key, with credentials)" in out
    assert "k tcp: ok" in out
    assert f"to the proxy 127.0.0.1:{proxy.port}" in out
    assert "k tls: ok" in out
    assert "verified localhost" in out
    assert "k login: ok" in out
    assert proxy.connects().count(f"localhost:{front.port}") == 2  # the tls step, the login
    assert proxy.password not in out
