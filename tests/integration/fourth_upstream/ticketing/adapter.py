"""Cancel: `DELETE /tickets/{id}`; no read API to confirm with."""

from __future__ import annotations

from typing import Any

from adapters.http import (
    OPERATION,
    UNREADABLE,
    answered,
    failed_reply,
    http_client,
    json_body,
    send,
    status_key,
)
from gateway.connection import ConnectionSettings
from gateway.errors import JobKindNotImplemented
from gateway.jobs import JobKind
from gateway.model import UpstreamReply
from gateway.upstream import LegCheck, Preflight
from tests.integration.fourth_upstream.ticketing.codes import CODES
from tests.integration.fourth_upstream.ticketing.jobs import TicketingJob


class TicketingAdapter:
    def __init__(self, connection: ConnectionSettings, transport: Any = None) -> None:
        self._client = http_client(connection, connection.options.base_url, transport)

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        if not isinstance(job, TicketingJob):  # its one job kind
            raise JobKindNotImplemented(f"ticketing serves no {type(job).__name__}")

        async def close() -> UpstreamReply:
            request = self._client.build_request(
                "DELETE", f"/tickets/{job.ticket_id}", extensions={OPERATION: job.operation}
            )
            response = await send(self._client, request, timeout)
            if not response.is_success:
                key = status_key(CODES, response.status_code)
                return failed_reply(CODES, job.legs, key, f"HTTP {response.status_code}")
            body = json_body(response)
            closed = isinstance(body, dict) and body.get("closed") is True
            return failed_reply(CODES, job.legs, "closed" if closed else UNREADABLE, "", body=body)

        return await answered(
            close(),
            timeout=timeout,
            refused_code="HTTP other",
            on_failure=lambda failure: failed_reply(CODES, job.legs, failure.code, failure.message),
        )

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        return ()

    async def preflight(self, *, timeout: float) -> Preflight:
        return Preflight(True, "no login")

    async def aclose(self) -> None:
        await self._client.aclose()
