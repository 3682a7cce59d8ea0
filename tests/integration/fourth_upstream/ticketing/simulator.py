"""The simulator: an ASGI fake of the ticketing API, and how the sandbox runs it."""

from __future__ import annotations

from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.simulation import Example, SandboxUpstream
from tests.integration.fourth_upstream.ticketing.jobs import TicketingJob


class TicketingSimulator:
    def __init__(self) -> None:
        self.open: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.app = Starlette(routes=[Route("/tickets/{ticket}", self._close, methods=["DELETE"])])

    async def _close(self, request: Request) -> Response:
        ticket = request.path_params["ticket"]
        self.calls[ticket] += 1
        if ticket not in self.open:
            return JSONResponse({"error": "no such ticket"}, 404)
        self.open.discard(ticket)
        return JSONResponse({"closed": True})


def _seed(simulator: TicketingSimulator) -> list[Example]:
    simulator.open.add("T1001")
    return [Example(TicketingJob("T1001", priority=2), "CANCELED")]


SANDBOX = SandboxUpstream(
    simulator=TicketingSimulator,
    seed=_seed,
    connection=lambda base_url: {"upstream": "ticketing", "base_url": base_url},
    environ={},
)
