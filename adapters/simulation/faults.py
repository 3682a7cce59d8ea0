"""Injected upstream misbehaviour, shared by every simulator."""

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal

from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

FaultKind = Literal["garbage", "empty", "http_status", "rate_limited", "delay", "late", "json"]


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, e.g. ``Fault("rate_limited", seconds=2)``.

    ``status`` is the code for ``http_status`` (sent with ``payload`` as JSON
    when given, else the status phrase as text); ``seconds`` is the ``delay``
    length (before the request is handled: nothing happens if the client gives
    up), the ``late`` length (after it is handled: the job is canceled, and a
    client that gives up never learns it) or the ``rate_limited`` Retry-After;
    ``payload`` is the body of a ``json`` fault. ``auth`` faults hit only login/token
    endpoints and the others only business endpoints, so a test can break one without
    the other.
    """

    kind: FaultKind
    status: int = 500
    seconds: float = 1.0
    payload: object = None
    auth: bool = False


@dataclass
class FaultQueue:
    """Pending faults in injection order; ``rate_limit_body`` is the dialect's 429 body."""

    rate_limit_body: str | dict[str, object]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _pending: list[Fault] = field(default_factory=list)

    def inject(self, fault: Fault, times: int = 1) -> None:
        self._pending.extend([fault] * times)

    def hold(self, kind: Literal["delay", "late"] = "delay", times: int = 1) -> asyncio.Event:
        """Queues a `delay` (or a `late` answer) that lasts until the returned event is set,
        not for a time: a test keeps a request in flight exactly as long as it needs to, on
        any machine."""
        release = asyncio.Event()

        async def until_released(seconds: float) -> None:
            await release.wait()

        self.sleep = until_released
        self.inject(Fault(kind), times)
        return release

    def __len__(self) -> int:
        return len(self._pending)

    async def answer(self, *, auth: bool, respond: Callable[[], Awaitable[Response]]) -> Response:
        """The response to a request: `respond()`'s, unless the first fault aimed at this
        kind of endpoint says otherwise."""
        fault = self._take(auth)
        try:
            if fault is None:
                return await respond()
            if fault.kind == "late":
                response = await respond()
                await self.sleep(fault.seconds)
                return response
            return await self._faulty(fault) or await respond()
        except ClientDisconnect:  # the client gave up (during a delay): nothing was done
            return Response(status_code=499)

    def _take(self, auth: bool) -> Fault | None:
        fault = next((f for f in self._pending if f.auth == auth), None)
        if fault is not None:
            self._pending.remove(fault)
        return fault

    async def _faulty(self, fault: Fault) -> Response | None:
        """The response a fault sends instead of the normal answer, or None when the
        request should proceed (a delay that elapsed)."""
        match fault.kind:
            case "delay":
                await self.sleep(fault.seconds)
                return None
            case "garbage":
                return HTMLResponse("<html>upstream exploded</html>")
            case "empty":
                return Response(b"", media_type="application/json")
            case "http_status" if fault.payload is None:
                return PlainTextResponse(HTTPStatus(fault.status).phrase, fault.status)
            case "http_status":
                return JSONResponse(fault.payload, fault.status)
            case "rate_limited":
                return self._rate_limited(math.ceil(fault.seconds))
            case "json":
                return JSONResponse(fault.payload)
        return None

    def _rate_limited(self, retry_after: int) -> Response:
        headers = {"Retry-After": str(retry_after)}
        if isinstance(self.rate_limit_body, str):
            return PlainTextResponse(self.rate_limit_body, 429, headers)
        return JSONResponse(self.rate_limit_body, 429, headers)
