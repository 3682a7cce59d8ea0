"""The adapter module: one dialect (`DELETE /tickets/{id}`), one code table."""

from __future__ import annotations

from typing import Any

from adapters.codes import COMMON_CODES, UNREADABLE, failed_reply, status_key
from adapters.guard import answered
from adapters.http import OPERATION, http_client, json_body, send
from gateway.config import ConnectionSettings, Table
from gateway.jobs import JobKind
from gateway.model import Outcome, Reason, UpstreamReply, Verdict
from gateway.upstream import CodeTable, LegCheck, Upstream
from tests.integration.fourth_upstream.job import TicketingJob

CODES: CodeTable = {
    "closed": Verdict(Outcome.CANCELED, Reason.UNSPECIFIED, False, "the ticket is closed"),
    "HTTP 404": Verdict(Outcome.FAILED, Reason.NOT_FOUND, False, "no such ticket"),
    "HTTP 5xx": Verdict(Outcome.FAILED, Reason.UPSTREAM_ERROR, True, "server-side failure"),
    "HTTP other": Verdict(Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False, "undocumented"),
    **COMMON_CODES,
}


def parse_options(table: Table) -> str:
    return table.url("base_url")


class TicketingAdapter:
    def __init__(self, connection: ConnectionSettings, transport: Any = None) -> None:
        self._client = http_client(connection, connection.options, transport)

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        assert isinstance(job, TicketingJob)

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

    async def aclose(self) -> None:
        await self._client.aclose()


UPSTREAM = Upstream(
    name="ticketing",
    jobs=(TicketingJob,),
    codes=CODES,
    parse_options=parse_options,
    connect=TicketingAdapter,
    sandbox="tests.integration.fourth_upstream.simulator:SANDBOX",
)
