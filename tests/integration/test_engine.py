"""The HTTP engine over real loopback sockets: what it must never do on its own. A request
it repeats unseen is a cancel sent twice with no trace of the first."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from adapters.zuora import ZuoraAdapter, ZuoraReportRun
from gateway.model import Delivery
from tests.conftest import make_config, zuora_connection

TOKEN = json.dumps({"access_token": "t", "expires_in": 3600}).encode()
CANCELED = json.dumps({"success": True, "response": "The report run has been canceled"}).encode()


class ClosingServer:
    """Answers the first cancel on a kept-alive connection; reads the second, then resets
    the connection without answering. Counts the requests that arrived, by path."""

    def __init__(self) -> None:
        self.cancels = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length")), 0,
            )  # fmt: skip
            await reader.readexactly(length)
            if b"/oauth/token" in head:
                body = TOKEN
            else:
                self.cancels += 1
                if self.cancels > 1:  # it landed; the answer never comes
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                body = CANCELED
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
            await writer.drain()

    async def __aenter__(self) -> ClosingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


@pytest.fixture
async def closing() -> AsyncIterator[ClosingServer]:
    async with ClosingServer() as server:
        yield server


async def test_a_reset_after_a_cancel_is_not_repeated_by_the_engine(closing: ClosingServer) -> None:
    config = make_config({"z": zuora_connection(f"http://127.0.0.1:{closing.port}")})
    adapter = ZuoraAdapter(config.connections["z"])  # the real engine: no injected transport
    first = await adapter.cancel(ZuoraReportRun("a" * 32), timeout=2.0)
    second = await adapter.cancel(ZuoraReportRun("b" * 32), timeout=2.0)
    await adapter.aclose()
    assert first.delivery is Delivery.ANSWERED
    assert second.delivery is Delivery.NO_ANSWER, "it reached the upstream: it may have landed"
    assert closing.cancels == 2, "the engine must not send the second cancel again by itself"
