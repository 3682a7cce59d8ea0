"""Code-table rows every upstream shares, and the lookups each adapter's table goes through.

A table maps an upstream's signal to a `Verdict`; an unknown signal falls back to the next
more general one (body code -> HTTP status), never to a guess.
"""

from __future__ import annotations

from gateway.model import Delivery, JsonValue, LegResult, Outcome, Reason, UpstreamReply, Verdict
from gateway.upstream import CodeTable

UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
UNREADABLE = "unreadable"
MISCONFIGURED = "misconfigured"

COMMON_CODES: CodeTable = {
    UNREACHABLE: Verdict(
        Outcome.FAILED,
        Reason.UPSTREAM_UNAVAILABLE,
        True,
        "no connection (DNS, refused, connect timeout, proxy down), or one reset or lost",
    ),
    TIMEOUT: Verdict(Outcome.FAILED, Reason.TIMEOUT, True, "no answer within the time budget"),
    UNREADABLE: Verdict(
        Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False, "a body of no documented shape"
    ),
    MISCONFIGURED: Verdict(
        Outcome.FAILED,
        Reason.CONNECTION_MISCONFIGURED,
        False,
        "the connection's configuration: certificate, client certificate, proxy, URL, redirect",
    ),
}


def status_key(table: CodeTable, status: int) -> str:
    """The table's row for an HTTP status: `HTTP 404` when listed, else `HTTP 5xx` for server
    errors, else `HTTP other` (every adapter table has both class rows)."""
    listed = f"HTTP {status}"
    if listed in table:
        return listed
    return "HTTP 5xx" if status >= 500 else "HTTP other"


def failed_reply(
    table: CodeTable,
    legs: tuple[str, ...],
    key: str,
    message: str,
    *,
    body: JsonValue = None,
    shown_code: str = "",
    retry_after: float | None = None,
    delivery: Delivery = Delivery.ANSWERED,
) -> UpstreamReply:
    """The same verdict on every leg: transport trouble or an answer that covers the whole call.

    `key` picks the table row; `shown_code` is what the caller sees when it says more
    (`HTTP 503` for the `HTTP 5xx` row).
    """
    verdict = table[key]
    code = shown_code or key
    results = tuple(LegResult.from_verdict(leg, verdict, code, message) for leg in legs)
    return UpstreamReply(results, body, retry_after, delivery)
