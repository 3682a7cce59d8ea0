"""Serve an ASGI app over real HTTP on 127.0.0.1 inside the running event loop."""

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

_POLL_SECONDS = 0.005


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process owns SIGINT/SIGTERM; uvicorn must not swap its handlers.
        yield


class LoopbackServer:
    """``async with LoopbackServer(app) as server: httpx.get(server.url)``."""

    def __init__(
        self,
        app: ASGIApp,
        port: int = 0,
        startup_timeout: float = 5.0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`tls`: (certificate file, key file) to serve HTTPS instead of HTTP."""
        certfile, keyfile = tls if tls else (None, None)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._scheme = "https" if tls else "http"
        self._server = _Server(config)
        self._startup_timeout = startup_timeout
        self._task: asyncio.Task[None] | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "LoopbackServer":
        self._task = asyncio.create_task(self._serve())
        try:
            await self._wait_started(self._task)
        except BaseException:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            raise
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:
            # uvicorn reports bind failures via sys.exit, which would tear down the host loop.
            raise RuntimeError(f"uvicorn could not start on port {self.port}") from exc

    async def _wait_started(self, task: "asyncio.Task[None]") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        while not self._server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started serving")
            if loop.time() > deadline:
                raise RuntimeError(f"uvicorn did not start within {self._startup_timeout}s")
            await asyncio.sleep(_POLL_SECONDS)
