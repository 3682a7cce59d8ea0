"""Upstream HTTP metrics: `adapters.http.send` reports every exchange to the observer bound
around the adapter call, with a bounded operation label, and nothing outside one."""

from __future__ import annotations

import httpx2
import pytest

from adapters.http import MISCONFIGURED, OPERATION, UpstreamFailure, send
from gateway.metrics import Metrics
from gateway.upstream import observer, observing


def _client(status: int | None) -> httpx2.AsyncClient:
    """Answers every request with `status`, or fails to connect when None."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        if status is None:
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(status, json={})

    return httpx2.AsyncClient(base_url="http://up.sim", transport=httpx2.MockTransport(handler))


def _requests(metrics: Metrics, operation: str, status_class: str) -> float | None:
    labels = {"connection": "k", "operation": operation, "status_class": status_class}
    return metrics.registry.get_sample_value("cancelgw_upstream_requests_total", labels)


def _tagged(client: httpx2.AsyncClient, path: str, operation: str) -> httpx2.Request:
    return client.build_request("POST", path, extensions={OPERATION: operation})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.mark.parametrize(
    ("status", "status_class"), [(200, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx")]
)
async def test_each_answer_counts_under_its_status_class(
    metrics: Metrics, status: int, status_class: str
) -> None:
    async with _client(status) as client:
        with observing(metrics.connection("k", [], 1, lambda: 0)):
            request = _tagged(client, "/ap/CancelQuote", "CancelQuote")
            if status == 302:  # a redirect: answered, and the config's to mend
                with pytest.raises(UpstreamFailure) as redirected:
                    await send(client, request, 1.0)
                assert redirected.value.code == MISCONFIGURED
            else:
                await send(client, request, 1.0)
    assert _requests(metrics, "CancelQuote", status_class) == 1
    labels = {"connection": "k", "operation": "CancelQuote"}
    count = "cancelgw_upstream_request_duration_seconds_count"
    assert metrics.registry.get_sample_value(count, labels) == 1


async def test_no_answer_counts_as_error(metrics: Metrics) -> None:
    async with _client(None) as client:
        with observing(metrics.connection("k", [], 1, lambda: 0)), pytest.raises(UpstreamFailure):
            await send(client, _tagged(client, "/ap/AuthenticateUser", "AuthenticateUser"), 1.0)
    assert _requests(metrics, "AuthenticateUser", "error") == 1


@pytest.mark.parametrize(
    ("method", "path", "extensions", "operation"),
    [
        (
            "POST",
            "/ap/GetUserReportTickets",
            {OPERATION: "GetUserReportTickets"},
            "GetUserReportTickets",
        ),
        # An id in the path never becomes a label: the method stands in for it.
        ("DELETE", "/v1/reportruns/ff808081529f4e3401529fd61f080074", {}, "DELETE"),
        ("POST", "/oauth/token", {}, "POST"),
        ("DELETE", "/v1/reportruns/ff80", {OPERATION: "DeleteReportRun"}, "DeleteReportRun"),
    ],
)
async def test_operation_label_is_the_tag_or_the_method_never_an_id(
    metrics: Metrics, method: str, path: str, extensions: dict[str, str], operation: str
) -> None:
    async with _client(200) as client:
        request = client.build_request(method, path, extensions=extensions)
        with observing(metrics.connection("k", [], 1, lambda: 0)):
            await send(client, request, 1.0)
    assert _requests(metrics, operation, "2xx") == 1


async def test_token_refreshes_reach_the_bound_connection(metrics: Metrics) -> None:
    with observing(metrics.connection("k", [], 1, lambda: 0)):
        observer().token_refreshed("ok")
        observer().token_refreshed("refused")
    observer().token_refreshed("ok")  # unbound: nobody to tell, and no error
    for result, count in (("ok", 1), ("refused", 1), ("error", 0)):
        labels = {"connection": "k", "result": result}
        assert metrics.registry.get_sample_value("cancelgw_token_refreshes_total", labels) == count


async def test_calls_outside_a_bound_connection_are_not_counted(metrics: Metrics) -> None:
    metrics.connection("k", ["CancelQuote"], 1, lambda: 0)
    async with _client(200) as client:
        await send(client, _tagged(client, "/ap/CancelQuote", "CancelQuote"), 1.0)
    assert _requests(metrics, "CancelQuote", "2xx") == 0
