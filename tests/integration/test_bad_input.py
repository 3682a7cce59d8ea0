"""A corpus of hostile and malformed requests, over real gRPC: each gets its specific status
(and ErrorInfo reason, and the field named where one is at fault), and no upstream is called
for any of them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from gateway.rpc.server import MAX_METADATA_BYTES
from tests.conftest import kiiex_connection, make_config, zuora_connection
from tests.grpc_helpers import report_request, rich_error

TOKEN = "corpus-token"
REPORTS_ONLY = "reports-only-token"
GUID = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
RUN = "ff808081529f4e3401529fd61f080074"
BEARER = (("authorization", f"Bearer {TOKEN}"),)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
REPORT_FIELD = "kiiex_user_report.user_report_id"
RUN_FIELD = "zuora_report_run.report_run_id"


def _run(run_id: str) -> pb.CancelJobRequest:
    return pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id=run_id))


def _quote(**fields: int) -> pb.CancelJobRequest:
    quote = {"oms_id": 1, "bid_quote_id": 11, "ask_quote_id": 12, **fields}
    return pb.CancelJobRequest(kiiex_quote=pb.KiiexQuote(**quote))


# (request, metadata, code, ErrorInfo reason, field named in BadRequest or None)
Case = tuple[pb.CancelJobRequest, tuple[tuple[str, str], ...], grpc.StatusCode, str, str | None]


def _bad_report(report_id: str) -> Case:
    return (report_request(report_id), BEARER, INVALID, "INVALID_ARGUMENT", REPORT_FIELD)


def _bad_run(run_id: str) -> Case:
    return (_run(run_id), BEARER, INVALID, "INVALID_ARGUMENT", RUN_FIELD)


def _bad_quote(field: str, **fields: int) -> Case:
    return (_quote(**fields), BEARER, INVALID, "INVALID_ARGUMENT", f"kiiex_quote.{field}")


def _unauthenticated(*metadata: tuple[str, str]) -> Case:
    return (report_request(GUID), metadata, UNAUTHENTICATED, "UNAUTHENTICATED", None)


CORPUS: dict[str, Case] = {
    # Report ids: path traversal, encodings, look-alikes, control and invisible characters.
    "report traversal": _bad_report("../../etc/passwd"),
    "report encoded traversal": _bad_report("%2e%2e%2f%2e%2e%2f"),
    "report guid then traversal": _bad_report(f"{GUID}/../x"),
    "report cyrillic a": _bad_report(GUID.replace("a", "\u0430", 1)),
    "report fullwidth digits": _bad_report("\uff18" + GUID[1:]),
    "report trailing newline": _bad_report(GUID + "\n"),
    "report leading space": _bad_report(" " + GUID),
    "report empty": _bad_report(""),
    "report 10k chars": _bad_report("a" * 10_000),
    "report no dashes": _bad_report(GUID.replace("-", "")),
    "report braces": _bad_report("{" + GUID + "}"),
    "report urn": _bad_report("urn:uuid:" + GUID),
    "report nul": _bad_report(GUID[:-1] + "\x00"),
    "report rtl override": _bad_report("\u202e" + GUID),
    "report zero width": _bad_report(GUID[:8] + "\u200b" + GUID[8:]),
    "report percent nul": _bad_report(GUID + "%00"),
    "report sql": _bad_report("' OR 1=1 --"),
    "report html": _bad_report("<script>alert(1)</script>"),
    "report too short": _bad_report(GUID[:-1]),
    "report non-hex": _bad_report(GUID.replace("a", "g")),
    # Report run ids land in a URL path: nothing but 32 lower-case hex may pass.
    "run traversal": _bad_run("../../../../oauth/token"),
    "run upper-case": _bad_run(RUN.upper()),
    "run 31 chars": _bad_run(RUN[:-1]),
    "run 33 chars": _bad_run(RUN + "0"),
    "run encoded slash": _bad_run(RUN[:29] + "%2F"),
    "run fullwidth": _bad_run("\uff46" * 32),
    "run query": _bad_run(RUN[:28] + "?x=1"),
    "run fragment": _bad_run(RUN[:30] + "#f"),
    "run arabic digits": _bad_run("\u0660" * 32),
    "run padded": _bad_run(" " + RUN[1:]),
    "run empty": _bad_run(""),
    "run newline": _bad_run(RUN[:31] + "\n"),
    # Quote ids: zero, negative, missing.
    "quote oms zero": _bad_quote("oms_id", oms_id=0),
    "quote oms negative": _bad_quote("oms_id", oms_id=-1),
    "quote oms int32 min": _bad_quote("oms_id", oms_id=-(2**31)),
    "quote bid zero": _bad_quote("bid_quote_id", bid_quote_id=0),
    "quote ask negative": _bad_quote("ask_quote_id", ask_quote_id=-7),
    "quote ask int64 min": _bad_quote("ask_quote_id", ask_quote_id=-(2**63)),
    "quote account zero": _bad_quote("account_id", account_id=0),
    "quote instrument negative": _bad_quote("instrument_id", instrument_id=-5),
    # The oneof and the request's own fields.
    "empty request": (pb.CancelJobRequest(), BEARER, INVALID, "INVALID_ARGUMENT", "job"),
    "only a connection": (
        pb.CancelJobRequest(connection="k"),
        BEARER,
        INVALID,
        "INVALID_ARGUMENT",
        "job",
    ),
    "connection 129 chars": (
        report_request(GUID, connection="c" * 129),
        BEARER,
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_PERMITTED",
        None,
    ),  # a stranger's connection name is judged by permission first
    "connection control char": (
        report_request(GUID, connection="k\n"),
        BEARER,
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_PERMITTED",
        None,
    ),
    "connection of another upstream": (
        report_request(GUID, connection="z"),
        BEARER,
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_PERMITTED",
        None,
    ),
    "key 257 chars": (
        report_request(GUID, idempotency_key="k" * 257),
        BEARER,
        INVALID,
        "INVALID_ARGUMENT",
        "idempotency_key",
    ),
    "key tab": (
        report_request(GUID, idempotency_key="a\tb"),
        BEARER,
        INVALID,
        "INVALID_ARGUMENT",
        "idempotency_key",
    ),
    "key nul": (
        report_request(GUID, idempotency_key="\x00"),
        BEARER,
        INVALID,
        "INVALID_ARGUMENT",
        "idempotency_key",
    ),
    "job not permitted": (
        _quote(),
        (("authorization", f"Bearer {REPORTS_ONLY}"),),
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_PERMITTED",
        None,
    ),
    # Malformed authorization.
    "auth none": _unauthenticated(),
    "auth scheme only": _unauthenticated(("authorization", "Bearer")),
    "auth spaces": _unauthenticated(("authorization", "Bearer    ")),
    "auth token with spaces": _unauthenticated(("authorization", f"Bearer {TOKEN} x")),
    "auth 8k token": _unauthenticated(("authorization", "Bearer " + "x" * 8000)),
    "auth no space": _unauthenticated(("authorization", f"Bearer{TOKEN}")),
    "auth basic": _unauthenticated(("authorization", "Basic Y29ycHVzOnRva2Vu")),
    "auth digest of the token": _unauthenticated(
        ("authorization", f"Bearer {hashlib.sha256(TOKEN.encode()).hexdigest()}")
    ),
    "auth twice": _unauthenticated(*BEARER, *BEARER),
    "auth token in another header": _unauthenticated(("x-authorization", f"Bearer {TOKEN}")),
}


# One gateway and one pair of simulators serve the whole corpus (nothing any case sends may
# reach them, so nothing carries over): starting them per case would cost most of a minute.
pytestmark = pytest.mark.asyncio(loop_scope="module")
Upstreams = tuple[KiiexSimulator, ZuoraSimulator, str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstreams() -> AsyncIterator[Upstreams]:
    kiiex, zuora = KiiexSimulator(), ZuoraSimulator()
    async with LoopbackServer(kiiex.app) as k, LoopbackServer(zuora.app) as z:
        yield kiiex, zuora, k.url, z.url


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    upstreams: Upstreams,
) -> AsyncIterator[tuple[gateway_pb2_grpc.CancellationGatewayStub, grpc.aio.Channel]]:
    _, _, kiiex_url, zuora_url = upstreams
    callers = [
        {"name": "corpus", "token_sha256": _digest(TOKEN),
         "jobs": ["kiiex_user_report", "zuora_report_run", "kiiex_quote"],
         "connections": ["k", "zr"], "rate_per_second": 10_000, "burst": 10_000},
        {"name": "reports", "token_sha256": _digest(REPORTS_ONLY), "jobs": ["kiiex_user_report"]},
    ]  # fmt: skip
    config = make_config(
        {"k": kiiex_connection(kiiex_url), "z": kiiex_connection(kiiex_url, default=False),
         "zr": zuora_connection(zuora_url)},
        server={"allow_unauthenticated": False},
        callers=callers,
    )  # fmt: skip
    server = GatewayServer(config)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield gateway_pb2_grpc.CancellationGatewayStub(channel), channel
    await server.stop(grace=0.5)


def _assert_no_upstream_called(upstreams: Upstreams) -> None:
    kiiex, zuora, _, _ = upstreams
    assert sum(kiiex.calls.values()) + sum(zuora.calls.values()) == 0


@pytest.fixture
def stub(
    gateway: tuple[gateway_pb2_grpc.CancellationGatewayStub, grpc.aio.Channel],
) -> gateway_pb2_grpc.CancellationGatewayStub:
    return gateway[0]


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_bad_input_gets_its_code_and_calls_nothing(
    stub: gateway_pb2_grpc.CancellationGatewayStub,
    upstreams: Upstreams,
    name: str,
) -> None:
    request, metadata, code, reason, field = CORPUS[name]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(request, metadata=metadata, timeout=10)
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (code, reason)
    if field is not None:
        assert error.bad_fields == [field]
    _assert_no_upstream_called(upstreams)


async def test_a_quote_whose_legs_are_one_order_is_refused_naming_both(
    stub: gateway_pb2_grpc.CancellationGatewayStub, upstreams: Upstreams
) -> None:
    """One order as both legs would be cancelled twice, each answer claiming the other leg."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(_quote(bid_quote_id=12), metadata=BEARER, timeout=10)
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (INVALID, "INVALID_ARGUMENT")
    assert error.bad_fields == ["kiiex_quote.bid_quote_id", "kiiex_quote.ask_quote_id"]
    _assert_no_upstream_called(upstreams)


async def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) + len(RAW) + 2 >= 60


RAW = {
    "garbage bytes": b"\xff\xff\xff\xff",
    "invalid utf-8 in the report id": b"\x0a\x05\x0a\x03\xff\xfe\xfd",
    "truncated length": b"\x0a\x7f\x0a",
    "deep nesting cut": b"\x0a\x05\x0a\x03abc\xff",
}


@pytest.mark.parametrize("name", sorted(RAW))
async def test_undecodable_bytes_are_refused(
    gateway: tuple[gateway_pb2_grpc.CancellationGatewayStub, grpc.aio.Channel],
    upstreams: Upstreams,
    name: str,
) -> None:
    raw = gateway[1].unary_unary("/cancellation.v1.CancellationGateway/CancelJob")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw(RAW[name], metadata=BEARER, timeout=10)
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (INVALID, "UNDECODABLE_REQUEST")
    _assert_no_upstream_called(upstreams)


async def test_a_message_past_the_size_limit_is_resource_exhausted(
    stub: gateway_pb2_grpc.CancellationGatewayStub,
    upstreams: Upstreams,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request("a" * (5 << 20)), metadata=BEARER, timeout=10)
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_no_upstream_called(upstreams)


async def test_metadata_past_the_size_limit_is_refused(
    stub: gateway_pb2_grpc.CancellationGatewayStub,
    upstreams: Upstreams,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(
            report_request(GUID), metadata=(*BEARER, ("x-padding", "p" * 40_000)), timeout=10
        )
    assert raised.value.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE
    )  # fmt: skip
    _assert_no_upstream_called(upstreams)


async def test_metadata_size_decides_the_answer_every_time(
    stub: gateway_pb2_grpc.CancellationGatewayStub, upstreams: Upstreams
) -> None:
    """grpc's default refuses metadata between 8 and 16 KiB at random; the gateway has one
    limit, so the same call gets the same answer: 12 KB of token is read (and is unknown),
    more than MAX_METADATA_BYTES is refused by the transport every time."""
    codes = []
    for size in [12_000] * 20 + [MAX_METADATA_BYTES] * 5:
        metadata = (("authorization", "Bearer " + "x" * size),)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CancelJob(report_request(GUID), metadata=metadata, timeout=10)
        codes.append(raised.value.code())
    assert codes == [UNAUTHENTICATED] * 20 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
    _assert_no_upstream_called(upstreams)
