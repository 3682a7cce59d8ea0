"""The interceptors without a network: each method wrapped once, open services left alone,
the final code judged as a client sees it, and the caller identified before a handler runs."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import grpc
import pytest

from gateway.auth import Callers, CallerSettings, current_caller
from gateway.metrics import Metrics
from gateway.rpc.interceptors import AuthInterceptor, MetricsInterceptor, final_code
from tests.unit.gateway.rpc.fakes import FakeContext

TOKEN = "token-of-the-ops-bot"
METHOD = "/cancellation.v1.CancellationGateway/CancelJob"
HEALTH = "/grpc.health.v1.Health/Check"


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


def _handler(seen: list[str]) -> grpc.RpcMethodHandler:
    async def behaviour(request: Any, context: Any) -> str:
        caller = current_caller()
        seen.append(caller.name if caller else "")
        return "done"

    return grpc.unary_unary_rpc_method_handler(behaviour)


async def _intercepted(interceptor: Any, method: str, handler: Any) -> grpc.RpcMethodHandler:
    async def continuation(details: Any) -> Any:
        return handler

    wrapped: grpc.RpcMethodHandler = await interceptor.intercept_service(
        continuation, _Details(method)
    )
    return wrapped


def _auth() -> AuthInterceptor:
    caller = CallerSettings(
        name="ops-bot",
        token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
        jobs=frozenset({"kiiex_user_report"}),
    )
    callers = Callers([caller], allow_unauthenticated=False)
    return AuthInterceptor(callers, {"grpc.health.v1.Health"}, Metrics())


async def test_the_caller_is_bound_for_the_handler_and_unbound_after() -> None:
    seen: list[str] = []
    wrapped = await _intercepted(_auth(), METHOD, _handler(seen))
    context = FakeContext([("authorization", f"Bearer {TOKEN}")])
    assert await wrapped.unary_unary(None, context) == "done"
    assert seen == ["ops-bot"]
    assert current_caller() is None


async def test_a_call_without_credentials_never_reaches_its_handler() -> None:
    seen: list[str] = []
    wrapped = await _intercepted(_auth(), METHOD, _handler(seen))
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await wrapped.unary_unary(None, context)
    assert seen == []
    assert context.details() == {
        "code": "UNAUTHENTICATED",
        "reason": "UNAUTHENTICATED",
        "fields": [],
    }


async def test_open_services_are_not_wrapped_and_each_method_is_wrapped_once() -> None:
    interceptor, handler = _auth(), _handler([])
    assert await _intercepted(interceptor, HEALTH, handler) is handler
    first = await _intercepted(interceptor, METHOD, handler)
    assert first is not handler
    assert await _intercepted(interceptor, METHOD, handler) is first


async def test_the_metrics_count_the_final_code() -> None:
    metrics = Metrics()
    interceptor = MetricsInterceptor(metrics, ())
    wrapped = await _intercepted(interceptor, METHOD, _handler([]))
    await wrapped.unary_unary(None, FakeContext())
    labels = {
        "grpc_type": "unary",
        "grpc_service": "cancellation.v1.CancellationGateway",
        "grpc_method": "CancelJob",
        "grpc_code": "OK",
    }
    assert metrics.registry.get_sample_value("grpc_server_handled_total", labels) == 1


@pytest.mark.parametrize(
    ("error", "code_set", "remaining", "final"),
    [
        (None, None, 5.0, grpc.StatusCode.OK),
        (None, grpc.StatusCode.NOT_FOUND, 5.0, grpc.StatusCode.NOT_FOUND),
        (RuntimeError("bug"), None, 5.0, grpc.StatusCode.UNKNOWN),
        (asyncio.CancelledError(), None, 0.0, grpc.StatusCode.DEADLINE_EXCEEDED),
        (asyncio.CancelledError(), None, 3.0, grpc.StatusCode.CANCELLED),
    ],
)
def test_the_final_code_is_what_the_client_gets(
    error: BaseException | None,
    code_set: grpc.StatusCode | None,
    remaining: float,
    final: grpc.StatusCode,
) -> None:
    context = FakeContext(time_remaining=remaining)
    context._code = code_set
    assert final_code(context, error) == final
