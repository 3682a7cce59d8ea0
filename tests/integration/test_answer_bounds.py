"""An upstream answer is read only up to MAX_RESPONSE_BYTES, in identity encoding, over real
loopback HTTP on the real engine: a body too long (declared, or streamed without a length),
or compressed though the gateway asked for none, ends as an unreadable answer (the cancel
may have landed: UNKNOWN), and the gateway stops reading at the limit instead of holding
whatever the upstream sends."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.http import MAX_RESPONSE_BYTES
from adapters.kiiex import KiiexAdapter, KiiexUserReport
from adapters.simulation.loopback import LoopbackServer
from gateway.model import Delivery, Outcome, Reason
from tests.conftest import kiiex_connection, make_config

REPORT = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")
LOGIN = json.dumps({"Authenticated": True, "SessionToken": "t0ken-for-bounds"}).encode()
ACCEPTED = json.dumps({"result": True, "errormsg": None, "errorcode": 0, "detail": None}).encode()
Send = Callable[[dict[str, Any]], Any]


class _Upstream:
    """A raw ASGI KIIEX: logs in, then answers each cancel as `answer` says; records how
    many body bytes it managed to send and the accept-encoding it was asked for."""

    def __init__(self, answer: Callable[[Send], Any]) -> None:
        self.answer = answer
        self.sent = 0
        self.accept_encoding: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        headers = dict(scope["headers"])
        self.accept_encoding.append(headers.get(b"accept-encoding", b"").decode())
        while (await receive()).get("more_body"):
            pass
        if scope["path"].endswith("/AuthenticateUser"):
            await _whole(send, LOGIN)
            return

        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def counted(message: dict[str, Any]) -> None:
            if gone.is_set():  # the reader hung up: what is offered now goes nowhere
                raise ConnectionResetError("the gateway stopped reading")
            self.sent += len(message.get("body", b""))
            await send(message)

        watcher = asyncio.create_task(watch())
        try:
            await self.answer(counted)
        except ConnectionResetError:
            pass
        finally:
            watcher.cancel()


async def _whole(send: Send, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [length, *headers]})
    await send({"type": "http.response.body", "body": body})


async def _endless(send: Send) -> None:
    """Chunked, no length, never ending: only the reader can stop it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = b'{"result": true, "detail": "' + b"x" * 65536
    for _ in range(10_000):  # 655 MB if nobody stops reading: bounded for the test's sake
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b'"}'})


async def _declared_too_long(send: Send) -> None:
    await _whole(send, b" " * (MAX_RESPONSE_BYTES + 1))


async def _compressed(send: Send) -> None:
    await _whole(send, gzip.compress(ACCEPTED), (b"content-encoding", b"gzip"))


async def _fits(send: Send) -> None:
    await _whole(send, ACCEPTED + b" " * (MAX_RESPONSE_BYTES - len(ACCEPTED)))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[LoopbackServer] = []

    async def serve(upstream: _Upstream) -> KiiexAdapter:
        server = LoopbackServer(upstream)  # type: ignore[arg-type]
        await server.__aenter__()
        servers.append(server)
        config = make_config({"k": kiiex_connection(server.url, timeout_seconds=8)})
        return KiiexAdapter(config.connections["k"], None)

    yield serve
    for server in servers:
        await server.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (_endless, f"longer than the {MAX_RESPONSE_BYTES} bytes read"),
        (_declared_too_long, f"more than the {MAX_RESPONSE_BYTES} read"),
        (_compressed, "content-encoding 'gzip', which was not asked for"),
    ],
    ids=["streamed-without-length", "declared-length", "gzip-unasked"],
)
async def test_an_answer_past_the_bound_is_unreadable_and_not_read_on(
    serve: Callable[..., Any], answer: Callable[[Send], Any], detail: str
) -> None:
    upstream = _Upstream(answer)
    adapter = await serve(upstream)
    reply = await adapter.cancel(REPORT, timeout=8)
    await adapter.aclose()
    (leg,) = reply.legs
    assert reply.delivery is Delivery.NO_ANSWER  # an answer came, but what it said is unknown
    assert (leg.reason, leg.upstream_code) == (Reason.BAD_UPSTREAM_RESPONSE, "unreadable")
    assert detail in leg.upstream_message
    # The reader hung up near the bound (flow control holds the sender to what was read,
    # give or take the sockets' buffers), not after 655 MB.
    assert upstream.sent < 4 * MAX_RESPONSE_BYTES
    assert set(upstream.accept_encoding) == {"identity"}


async def test_an_answer_of_exactly_the_bound_is_read(serve: Callable[..., Any]) -> None:
    adapter = await serve(_Upstream(_fits))
    reply = await adapter.cancel(REPORT, timeout=8)
    await adapter.aclose()
    assert [leg.outcome for leg in reply.legs] == [Outcome.ACCEPTED]
