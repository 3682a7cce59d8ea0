"""No secret gets out. Known secret values are configured (passwords, API secrets, client
secrets, legacy keys); upstreams echo back what they were sent (headers with the session
and OAuth tokens, bodies with the passwords) in every shape an answer can take, on every
error path; then every envelope, every gRPC error, every log line (debug included) and the
metrics page are searched for each secret and each token the simulators ever issued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx2
import pytest
from google.protobuf import json_format
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from gateway.stores.memory import MemoryStore
from tests.conftest import kiiex_connection, make_config, zuora_connection

SECRETS = {
    "KIIEX_USERNAME": "operator",
    "KIIEX_PASSWORD": "kiiex-Passw0rd-93f1",
    "KIIEX_KEY": "sim-api-key",
    "KIIEX_SECRET": "kiiex-api-Secret-77e2",
    "ZUORA_CLIENT_ID": "sim-client",
    "ZUORA_CLIENT_SECRET": "zuora-client-Secret-5a0c",
    "ZUORA_USER": "sim-user",
    "ZUORA_PASSWORD": "zuora-legacy-Passw0rd-c3d9",
}
SECRET_VALUES = [v for k, v in SECRETS.items() if "PASSWORD" in k or "SECRET" in k]
STYLES = ("kiiex-generic", "kiiex-legs", "zuora-reasons", "html", "text", "oauth-error")
STATUSES = (200, 400, 401, 429, 500, 502)


class Echo:
    """ASGI middleware: while `plan` has entries, answers each request by echoing its
    headers and body back in the next planned (status, style)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.plan: list[tuple[int, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.plan:
            await self._app(scope, receive, send)
            return
        status, style = self.plan.pop(0)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        echoed = f"you sent {headers} and {body.decode(errors='replace')}"
        payload, kind = _shaped(style, echoed)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"retry-after", b"1")]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


def _shaped(style: str, echoed: str) -> tuple[bytes, bytes]:
    generic = {"result": False, "errorcode": 101, "errormsg": echoed, "detail": echoed}
    shapes: dict[str, Any] = {
        "kiiex-generic": generic,
        "kiiex-legs": {"BidResult": generic, "AskResult": json.dumps(generic)},
        "zuora-reasons": {"success": False, "reasons": [{"code": 50000030, "message": echoed}]},
        "oauth-error": {"error": echoed, "reasons": [{"code": 90000011, "message": echoed}]},
    }
    if style in shapes:
        return json.dumps(shapes[style]).encode(), b"application/json"
    if style == "html":
        return f"<html><body><pre>{echoed}</pre></body></html>".encode(), b"text/html"
    return echoed.encode(), b"text/plain"


@pytest.fixture
async def echoing() -> AsyncIterator[dict[str, Any]]:
    kiiex, zuora = KiiexSimulator(users={"operator": SECRETS["KIIEX_PASSWORD"]},
                                  api_keys={"sim-api-key": (SECRETS["KIIEX_SECRET"], 1)}), \
        ZuoraSimulator(client_secret=SECRETS["ZUORA_CLIENT_SECRET"],
                       legacy_users={"sim-user": SECRETS["ZUORA_PASSWORD"]})  # fmt: skip
    kiiex_echo, zuora_echo = Echo(kiiex.app), Echo(zuora.app)
    async with LoopbackServer(kiiex_echo) as k, LoopbackServer(zuora_echo) as z:
        yield {"kiiex": kiiex, "zuora": zuora, "echo": {"kiiex": kiiex_echo, "zuora": zuora_echo},
               "urls": {"kiiex": k.url, "zuora": z.url}}  # fmt: skip


def _connections(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    kiiex, zuora = urls["kiiex"], urls["zuora"]
    legacy = {
        "client_id_env": None,
        "client_secret_env": None,
        "api_access_key_id_env": "ZUORA_USER",
        "api_secret_access_key_env": "ZUORA_PASSWORD",
    }
    once = {"retry": {"max_attempts": 1}, "confirm_timeout_seconds": 0.3}
    return {
        "k-password": kiiex_connection(kiiex, **once),
        "k-apikey": kiiex_connection(kiiex, default=False, username_env=None, password_env=None,
                                     api_key_env="KIIEX_KEY", api_secret_env="KIIEX_SECRET",
                                     user_id=1, **once),
        "z-oauth": zuora_connection(zuora, default=True, retry={"max_attempts": 1}),
        "z-legacy": zuora_connection(zuora, **legacy, retry={"max_attempts": 1}),
    }  # fmt: skip


def _requests(echoing: dict[str, Any], connection: str) -> pb.CancelJobRequest:
    if connection.startswith("k"):
        report = echoing["kiiex"].add_report()
        return pb.CancelJobRequest(
            kiiex_user_report=pb.KiiexUserReport(user_report_id=report), connection=connection,
            wait_for_confirmation=True, idempotency_key=report,
        )  # fmt: skip
    run = echoing["zuora"].add_run()
    return pb.CancelJobRequest(
        zuora_report_run=pb.ZuoraReportRun(report_run_id=run), connection=connection,
        idempotency_key=run,
    )  # fmt: skip


async def test_no_secret_or_token_reaches_an_envelope_an_error_a_log_or_the_metrics(
    echoing: dict[str, Any], captured_logs: Any
) -> None:
    config = make_config(_connections(echoing["urls"]), SECRETS,
                         server={"metrics_listen": "127.0.0.1:0"},
                         idempotency={"store": "memory"})  # fmt: skip
    server = GatewayServer(config)
    port = await server.start()
    seen: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        for connection in config.connections:
            upstream = "kiiex" if connection.startswith("k") else "zuora"
            echo = echoing["echo"][upstream]
            await stub.CancelJob(_requests(echoing, connection))  # logged in: tokens exist
            for status in STATUSES:
                for style in STYLES:
                    # the cancel, a re-login after a 401 and its repeat, a confirmation read
                    echo.plan = [(status, style)] * 3
                    seen.append(await _answer(stub, _requests(echoing, connection)))
                    echo.plan = []
            if upstream == "kiiex":
                echoing["kiiex"].expire_sessions()
            else:
                echoing["zuora"].expire_tokens()
            echo.plan = [(200, "oauth-error"), (500, "html")]  # the login answers echo too
            seen.append(await _answer(stub, _requests(echoing, connection)))
            echo.plan = []
    async with httpx2.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).text
    assert isinstance(server.store, MemoryStore)
    stored = "\n".join(r.attempts + r.result for r in server.store._records.values())
    assert stored.count("you sent") > 0, "the echoes were written down"
    await server.stop(grace=0.5)

    tokens = echoing["kiiex"].issued_tokens + echoing["zuora"].issued_tokens
    assert len(tokens) >= 3, "a session per KIIEX connection and an OAuth token were issued"
    everything = {"envelopes and errors": "\n".join(seen), "logs": captured_logs.getvalue(),
                  "metrics": metrics, "the idempotency store": stored}  # fmt: skip
    assert any("you sent" in text for text in seen), "the upstreams did echo"
    for where, text in everything.items():
        for secret in [*SECRET_VALUES, *tokens]:
            assert secret not in text, f"{secret[:6]}… leaked into {where}"


async def _answer(stub: gateway_pb2_grpc.CancellationGatewayStub, request: Any) -> str:
    try:
        response = await stub.CancelJob(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        return f"{error.code()} {error.details()} {error.trailing_metadata()}"
    return json_format.MessageToJson(response)
