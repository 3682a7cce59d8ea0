"""Trust and identity per connection, with certificates made at test time (trustme) and a
real TLS front on loopback: `ca_file` is what the connection trusts (instead of the system
roots), `client_cert_file` + `client_key_file` its identity for upstreams that require
mutual TLS. What fails verification, or is refused, is CONNECTION_MISCONFIGURED, one
attempt, NOT_SENT."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2 as pb
from gateway.app.serve import GatewayServer
from gateway.config import ConfigError
from tests.conftest import kiiex_connection, make_config
from tests.grpc_helpers import report_request
from tests.processes import KIIEX_ENV, kiiex_gateway_config
from tests.tls_front import TlsFront

Start = Callable[..., Awaitable[tuple[Any, GatewayServer]]]
TIMING = {"timeout_seconds": 2, "connect_timeout_seconds": 1}


class Certificates:
    """Two CAs: the upstream's and a stranger's; files written into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.upstream_ca, self.stranger_ca = trustme.CA(), trustme.CA()

    def write(self, name: str, blob: trustme.Blob) -> Path:
        path = self.folder / name
        blob.write_to_path(str(path))
        return path

    def server(self, ca: trustme.CA, name: str) -> tuple[Path, Path]:
        issued = ca.issue_cert("localhost", "127.0.0.1")
        cert = self.write(f"{name}.crt", issued.cert_chain_pems[0])
        return cert, self.write(f"{name}.key", issued.private_key_pem)

    def client(self, ca: trustme.CA, name: str, **dates: Any) -> dict[str, str]:
        issued = ca.issue_cert(f"{name}.gateway.example", **dates)
        return {
            "client_cert_file": str(self.write(f"{name}-client.crt", issued.cert_chain_pems[0])),
            "client_key_file": str(self.write(f"{name}-client.key", issued.private_key_pem)),
        }

    def ca_file(self, ca: trustme.CA, name: str) -> str:
        return str(self.write(f"{name}-ca.pem", ca.cert_pem))


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def _mtls_front(certs: Certificates, upstream: LoopbackServer, **options: Any) -> TlsFront:
    port = int(upstream.url.rsplit(":", 1)[1])
    ca = certs.write("clients-ca.pem", certs.upstream_ca.cert_pem)
    cert, key = certs.server(certs.upstream_ca, "front")
    return TlsFront(port, cert_file=cert, key_file=key, client_ca_file=ca, **options)


async def _cancel(start: Start, url: str, sim: KiiexSimulator, **keys: Any) -> Any:
    stub, _ = await start(make_config({"k": kiiex_connection(url, **TIMING, **keys)}))
    return await stub.CancelJob(report_request(sim.add_report()), timeout=10)


def _assert_misconfigured(response: Any, says: str) -> None:
    assert (response.outcome, response.reason, response.retryable, response.attempts) == (
        pb.OUTCOME_FAILED, pb.REASON_CONNECTION_MISCONFIGURED, False, 1
    )  # fmt: skip
    assert [a.delivery for a in response.attempt_history] == [pb.DELIVERY_NOT_SENT]
    assert says in response.message, response.message


async def test_the_right_client_certificate_cancels(
    start_gateway: Start, certs: Certificates, kiiex_sim: KiiexSimulator, kiiex_http: LoopbackServer
) -> None:
    with _mtls_front(certs, kiiex_http) as front:
        response = await _cancel(
            start_gateway, front.url, kiiex_sim,
            ca_file=certs.ca_file(certs.upstream_ca, "upstream"),
            **certs.client(certs.upstream_ca, "right"),
        )  # fmt: skip
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert front.refused == 0


@pytest.mark.parametrize("tls", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
@pytest.mark.parametrize("client", ["none", "another CA's"])
async def test_a_client_certificate_the_upstream_refuses_is_misconfigured(
    start_gateway: Start,
    certs: Certificates,
    kiiex_sim: KiiexSimulator,
    kiiex_http: LoopbackServer,
    tls: ssl.TLSVersion,
    client: str,
) -> None:
    identity = certs.client(certs.stranger_ca, "stranger") if client != "none" else {}
    with _mtls_front(certs, kiiex_http, maximum=tls) as front:
        response = await _cancel(
            start_gateway, front.url, kiiex_sim,
            ca_file=certs.ca_file(certs.upstream_ca, "upstream"), **identity,
        )  # fmt: skip
    # TLS 1.2 refuses a missing certificate with the generic handshake_failure alert.
    generic = tls is ssl.TLSVersion.TLSv1_2 and client == "none"
    says = (
        "TLS handshake with localhost" if generic else "the upstream refused the client certificate"
    )
    _assert_misconfigured(response, says)
    assert sum(kiiex_sim.calls.values()) == 0


async def test_a_server_certificate_of_another_ca_is_misconfigured_and_not_retried(
    start_gateway: Start, certs: Certificates, kiiex_sim: KiiexSimulator, kiiex_http: LoopbackServer
) -> None:
    port = int(kiiex_http.url.rsplit(":", 1)[1])
    cert, key = certs.server(certs.stranger_ca, "impostor")
    with TlsFront(port, cert_file=cert, key_file=key) as front:
        response = await _cancel(
            start_gateway, front.url, kiiex_sim,
            ca_file=certs.ca_file(certs.upstream_ca, "upstream"),
        )  # fmt: skip
    _assert_misconfigured(response, f"certificate verification failed for localhost:{port}"[:45])
    assert sum(kiiex_sim.calls.values()) == 0


def test_a_ca_file_replaces_the_system_roots(certs: Certificates) -> None:
    """With `ca_file` the connection trusts that bundle alone: a certificate signed only by
    a system root is refused, because no system root is in the context."""
    ca_file = certs.ca_file(certs.upstream_ca, "upstream")
    config = make_config({"k": kiiex_connection("https://localhost:1", ca_file=ca_file)})
    context = config.connections["k"].tls_context()
    assert context is not None
    trusted = context.get_ca_certs()
    assert len(trusted) == 1
    assert ssl.create_default_context().get_ca_certs() != trusted  # the roots are not in it
    expected = ssl.DER_cert_to_PEM_cert(
        ssl.PEM_cert_to_DER_cert(certs.upstream_ca.cert_pem.bytes().decode())
    )
    assert ssl.DER_cert_to_PEM_cert(context.get_ca_certs(binary_form=True)[0]) == expected


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({"ca_file": "/no/such/ca.pem"}, "connections.k.ca_file: cannot read /no/such/ca.pem"),
        ({"client_cert_file": "__cert__"}, "connections.k.client_cert_file: give both"),
        ({"client_cert_file": "__cert__", "client_key_file": "__other_key__"},
         "connections.k.client_cert_file: the certificate and key do not load as a pair"),
        ({"client_cert_file": "__expired_cert__", "client_key_file": "__expired_key__"},
         "connections.k.client_cert_file: the certificate of O=trustme"),
        ({"ca_file": "__cert_key__"}, "connections.k.ca_file: not a PEM CA bundle"),
    ],
)  # fmt: skip
def test_trust_files_are_checked_at_start_naming_the_key(
    certs: Certificates, keys: dict[str, str], says: str
) -> None:
    good = certs.client(certs.upstream_ca, "good")
    other = certs.client(certs.upstream_ca, "other")
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = certs.client(certs.upstream_ca, "expired", not_before=past, not_after=past)
    files = {
        "__cert__": good["client_cert_file"], "__other_key__": other["client_key_file"],
        "__expired_cert__": expired["client_cert_file"],
        "__expired_key__": expired["client_key_file"],
        "__cert_key__": good["client_key_file"],
    }  # fmt: skip
    resolved = {key: files.get(value, value) for key, value in keys.items()}
    with pytest.raises(ConfigError) as refused:
        make_config({"k": kiiex_connection("https://localhost:1", **resolved)})
    assert str(refused.value).startswith(says)


async def test_the_client_certificates_expiry_is_exported(
    start_gateway: Start, certs: Certificates
) -> None:
    until = datetime.datetime(2099, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    identity = certs.client(certs.upstream_ca, "exported", not_after=until)
    config = make_config({"k": kiiex_connection("https://localhost:1", **identity)})
    _, server = await start_gateway(config)
    exported = server.metrics.registry.get_sample_value(
        "cancelgw_upstream_client_cert_expiry_timestamp_seconds", {"connection": "k"}
    )
    assert exported == until.timestamp()


async def test_check_connect_sees_the_refusal_that_follows_a_tls13_handshake(
    tmp_path: Path, certs: Certificates, kiiex_http: LoopbackServer
) -> None:
    """Under TLS 1.3 the client's handshake completes before the server judges its (missing)
    certificate: the preflight waits for the alert that follows, and fails."""
    with _mtls_front(certs, kiiex_http) as front:
        ca_file = certs.ca_file(certs.upstream_ca, "upstream")
        config = tmp_path / "gateway.toml"
        config.write_text(kiiex_gateway_config(front.url, ca_file=ca_file))
        checked = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "cancelgw"), "check", "--config", str(config),
            "--connect", stdout=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin", **KIIEX_ENV},
        )  # fmt: skip
        out = (await asyncio.wait_for(checked.communicate(), 30))[0].decode()
    assert checked.returncode == 1, out
    assert "k tls: FAILED" in out
    assert "CERTIFICATE_REQUIRED" in out.upper()
