import signal
import socket

import httpx2
import pytest

from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator


async def test_serves_real_http_and_leaves_signals_alone() -> None:
    sigint_handler = signal.getsignal(signal.SIGINT)
    async with LoopbackServer(ZuoraSimulator().app) as server:
        assert server.port > 0
        assert signal.getsignal(signal.SIGINT) is sigint_handler
        async with httpx2.AsyncClient(base_url=server.url) as client:
            reply = await client.post("/oauth/token", data={"client_id": "nope"})
    assert reply.status_code == 401


async def test_port_in_use_raises_runtime_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start"):
            async with LoopbackServer(ZuoraSimulator().app, port=port):
                pass
