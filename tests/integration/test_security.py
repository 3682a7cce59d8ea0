"""Secure by default, over real gRPC and real TLS (certificates made here with trustme, never
committed): who may call, what they may cancel, how fast, and what the upstream never sees
when a call is refused."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.sandbox import sandbox
from gateway.app.serve import GatewayServer
from gateway.config import ConfigError
from tests.conftest import kiiex_connection, make_config
from tests.grpc_helpers import report_request, rich_error

Stub = gateway_pb2_grpc.CancellationGatewayStub
BOT_TOKEN = "bot-token-7f1c2e"
DESK_TOKEN = "desk-token-93ab"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CALLERS: list[dict[str, Any]] = [
    {"name": "incident-bot", "token_sha256": digest(BOT_TOKEN), "jobs": ["kiiex_user_report"],
     "rate_per_second": 1000, "burst": 1000},
    {"name": "desk", "token_sha256": digest(DESK_TOKEN), "jobs": ["kiiex_user_report"],
     "connections": ["other"], "rate_per_second": 1, "burst": 2},
]  # fmt: skip
CERT_CALLERS = [
    {"name": "mm-desk", "cert_subject": "mm-desk.internal", "jobs": ["kiiex_user_report"]},
    {"name": "desk-2", "cert_subject": "desk.internal", "jobs": ["kiiex_user_report"]},
]


@dataclass
class Pki:
    ca: trustme.CA
    folder: Path

    def write(self, name: str, blob: trustme.Blob) -> str:
        path = self.folder / name
        blob.write_to_path(str(path))
        return str(path)

    def server_files(self) -> dict[str, str]:
        issued = self.ca.issue_cert("localhost", "127.0.0.1")
        return {
            "cert_file": self.write("server.crt", issued.cert_chain_pems[0]),
            "key_file": self.write("server.key", issued.private_key_pem),
        }

    def client(
        self, name: str, ca: trustme.CA | None = None, **dates: Any
    ) -> grpc.ChannelCredentials:
        issued = (ca or self.ca).issue_cert(name, common_name=name, **dates)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem.bytes(),
            private_key=issued.private_key_pem.bytes(),
            certificate_chain=issued.cert_chain_pems[0].bytes(),
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(trustme.CA(), tmp_path)


def _config(kiiex_url: str, **server: Any) -> Any:
    connections = {
        "k": kiiex_connection(kiiex_url),
        "other": kiiex_connection(kiiex_url, default=False),
    }
    mtls = bool(server.get("tls", {}).get("client_ca_file"))
    callers = [*CALLERS, *CERT_CALLERS] if mtls else CALLERS  # cert callers need mTLS
    return make_config(
        connections, server={"allow_unauthenticated": False, **server}, callers=callers
    )


@pytest.fixture
async def gateway(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer
) -> tuple[Stub, GatewayServer]:
    started: tuple[Stub, GatewayServer] = await start_gateway(_config(kiiex_http.url))
    return started


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _refused(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = rich_error(raised.value)
    return error.code, error.info.reason, dict(error.info.metadata)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        _bearer("made-up"),
        (("authorization", "made-up"),),
        (("authorization", "Basic b3BlcmF0b3I6cGFzcw=="),),
        (("authorization", "Bearer "),),
        (("authorization", f"Bearer {BOT_TOKEN}x"),),
        (("authorization", f"bearer {BOT_TOKEN[:-1]}"),),
        (*_bearer(BOT_TOKEN), *_bearer(BOT_TOKEN)),  # two values: ambiguous, refused
    ],
    ids=["none", "unknown", "no-scheme", "basic", "empty", "suffix", "prefix", "twice"],
)
async def test_no_or_unknown_credentials_are_unauthenticated_and_call_nothing(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator, metadata: Any
) -> None:
    stub, _ = gateway
    report = kiiex_sim.add_report()
    code, reason, _ = await _refused(stub.CancelJob(report_request(report), metadata=metadata))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert sum(kiiex_sim.calls.values()) == 0, "the upstream saw nothing"


async def test_the_right_caller_is_served_and_named_in_the_log(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator, captured_logs: Any
) -> None:
    stub, _ = gateway
    report = kiiex_sim.add_report()
    response = await stub.CancelJob(report_request(report), metadata=_bearer(BOT_TOKEN))
    assert response.outcome == pb.OUTCOME_ACCEPTED
    line = next(line for line in captured_logs.getvalue().splitlines() if '"cancel_job"' in line)
    assert '"caller": "incident-bot"' in line
    assert f'"user_report_id": "{report}"' in line
    assert BOT_TOKEN not in captured_logs.getvalue()


@pytest.mark.parametrize(
    ("token", "request_", "metadata"),
    [
        (BOT_TOKEN, pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id="0" * 32)),
         {"caller": "incident-bot", "job": "zuora_report_run", "connection": ""}),
        (DESK_TOKEN, report_request("00000000-0000-4000-8000-000000000000"),
         {"caller": "desk", "job": "kiiex_user_report", "connection": "k"}),
        (DESK_TOKEN, report_request("00000000-0000-4000-8000-000000000000", connection="k"),
         {"caller": "desk", "job": "kiiex_user_report", "connection": "k"}),
        (DESK_TOKEN, report_request("00000000-0000-4000-8000-000000000000", connection="nope"),
         {"caller": "desk", "job": "kiiex_user_report", "connection": "nope"}),
    ],
    ids=["job", "default-connection", "named-connection", "unknown-connection"],
)  # fmt: skip
async def test_a_caller_outside_its_jobs_or_connections_is_denied_before_any_lookup(
    gateway: tuple[Stub, GatewayServer],
    kiiex_sim: KiiexSimulator,
    token: str,
    request_: pb.CancelJobRequest,
    metadata: dict[str, str],
) -> None:
    stub, _ = gateway
    code, reason, seen = await _refused(stub.CancelJob(request_, metadata=_bearer(token)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_PERMITTED")
    assert seen == metadata  # an unknown connection is not revealed as such to a stranger
    assert sum(kiiex_sim.calls.values()) == 0


async def test_a_caller_over_its_rate_is_told_when_to_come_back(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    request = report_request(kiiex_sim.add_report(), connection="other")
    for _ in range(2):  # the burst
        assert (await stub.CancelJob(request, metadata=_bearer(DESK_TOKEN))).outcome
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(request, metadata=_bearer(DESK_TOKEN))
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_RATE_LIMITED"
    )  # fmt: skip
    raw = dict(raised.value.trailing_metadata() or ())["grpc-status-details-bin"]
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status_pb2.Status.FromString(raw).details)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1
    assert kiiex_sim.calls["CancelUserReport"] == 2


async def test_health_stays_open_and_reflection_follows_its_setting(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer
) -> None:
    for reflection in (True, False):
        _, server = await start_gateway(_config(kiiex_http.url, reflection=reflection))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            if reflection:
                answer = await stream.read()
                names = {s.name for s in answer.list_services_response.service}
                assert "cancellation.v1.CancellationGateway" in names
            else:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stream.read()
                assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def _tls_gateway(
    start_gateway: Callable[..., Any], kiiex_url: str, pki: Pki, mtls: bool
) -> int:
    tls = pki.server_files()
    if mtls:
        tls["client_ca_file"] = pki.write("clients-ca.pem", pki.ca.cert_pem)
    _, server = await start_gateway(_config(kiiex_url, tls=tls))
    port: int = server.port
    return port


def _channel(port: int, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


async def test_tls_serves_a_token_caller_and_refuses_plaintext(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator,
    pki: Pki,
) -> None:  # fmt: skip
    port = await _tls_gateway(start_gateway, kiiex_http.url, pki, mtls=False)
    trust = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem.bytes())
    async with _channel(port, trust) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        response = await stub.CancelJob(
            report_request(kiiex_sim.add_report()), metadata=_bearer(BOT_TOKEN)
        )
        assert response.outcome == pb.OUTCOME_ACCEPTED
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway_pb2_grpc.CancellationGatewayStub(plain).CancelJob(
                report_request(kiiex_sim.add_report()), metadata=_bearer(BOT_TOKEN), timeout=5
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_names_the_caller_by_its_certificate(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator,
    pki: Pki,
) -> None:  # fmt: skip
    port = await _tls_gateway(start_gateway, kiiex_http.url, pki, mtls=True)
    async with _channel(port, pki.client("mm-desk.internal")) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        response = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert response.outcome == pb.OUTCOME_ACCEPTED
    async with _channel(port, pki.client("stranger.internal")) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        code, reason, _ = await _refused(stub.CancelJob(report_request(kiiex_sim.add_report())))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


@pytest.mark.parametrize("bad", ["untrusted", "expired", "none"])
async def test_mtls_refuses_an_untrusted_expired_or_missing_certificate(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator,
    pki: Pki, bad: str,
) -> None:  # fmt: skip
    port = await _tls_gateway(start_gateway, kiiex_http.url, pki, mtls=True)
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    credentials = {
        "untrusted": lambda: pki.client("mm-desk.internal", ca=trustme.CA()),
        "expired": lambda: pki.client(
            "mm-desk.internal", not_before=long_ago, not_after=long_ago + datetime.timedelta(1)
        ),
        "none": lambda: grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem.bytes()),
    }[bad]()
    async with _channel(port, credentials) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CancelJob(report_request(kiiex_sim.add_report()), timeout=5)
    # The handshake itself fails: the call never reaches the gateway's code.
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sum(kiiex_sim.calls.values()) == 0


def test_a_config_without_callers_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match=r"no \[\[callers\]\] configured"):
        make_config({"k": kiiex_connection()}, server={"allow_unauthenticated": False})


async def test_upstream_https_is_verified(
    start_gateway: Callable[..., Any], kiiex_sim: KiiexSimulator, pki: Pki
) -> None:
    issued = pki.ca.issue_cert("127.0.0.1", "localhost")  # a CA the gateway does not trust
    files = (
        pki.write("up.crt", issued.cert_chain_pems[0]),
        pki.write("up.key", issued.private_key_pem),
    )
    async with LoopbackServer(kiiex_sim.app, tls=files) as https:
        stub, _ = await start_gateway(_config(https.url))
        response = await stub.CancelJob(
            report_request(kiiex_sim.add_report()), metadata=_bearer(BOT_TOKEN)
        )
    assert (response.outcome, response.reason, response.retryable, response.attempts) == (
        pb.OUTCOME_FAILED,
        pb.REASON_CONNECTION_MISCONFIGURED,  # the config's to mend: not retried
        False,
        1,
    )
    assert "certificate verification failed for 127.0.0.1" in response.message
    assert sum(kiiex_sim.calls.values()) == 0, "nothing was sent to an unverified host"


async def test_upstream_redirects_are_not_followed(start_gateway: Callable[..., Any]) -> None:
    elsewhere = KiiexSimulator()
    async with LoopbackServer(elsewhere.app) as target:
        redirect = Starlette(routes=[Route("/{path:path}", lambda r: RedirectResponse(
            f"{target.url}/ap/AuthenticateUser", 307), methods=["POST"])])  # fmt: skip
        async with LoopbackServer(redirect) as redirecting:
            stub, _ = await start_gateway(_config(redirecting.url))
            response = await stub.CancelJob(
                report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"), metadata=_bearer(BOT_TOKEN)
            )
    assert (response.outcome, response.reason) == (
        pb.OUTCOME_FAILED,
        pb.REASON_CONNECTION_MISCONFIGURED,
    )
    assert f"redirected to '{target.url}/ap/AuthenticateUser'" in response.message
    assert sum(elsewhere.calls.values()) == 0, "the credentials were not sent on"


async def test_the_sandbox_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(RuntimeError, match="only on loopback"):
        async with sandbox("0.0.0.0:0"):
            pass


async def test_a_certificate_is_named_by_its_sans_and_may_not_name_two_callers(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator,
    pki: Pki,
) -> None:  # fmt: skip
    port = await _tls_gateway(start_gateway, kiiex_http.url, pki, mtls=True)

    def cert(common_name: str, *sans: str) -> grpc.ChannelCredentials:
        issued = pki.ca.issue_cert(*sans, common_name=common_name)
        return grpc.ssl_channel_credentials(
            pki.ca.cert_pem.bytes(), issued.private_key_pem.bytes(),
            issued.cert_chain_pems[0].bytes(),
        )  # fmt: skip

    outcomes = []
    for credentials in (cert("mm-desk.internal", "stranger.internal"),
                        cert("x", "mm-desk.internal", "desk.internal")):  # fmt: skip
        async with _channel(port, credentials) as channel:
            stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
            outcomes.append(await _refused(stub.CancelJob(report_request(kiiex_sim.add_report()))))
    # The CN counts only without SANs; here the SAN names nobody.
    assert outcomes[0][:2] == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert outcomes[1][:2] == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
