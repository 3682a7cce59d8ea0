"""KIIEX (AlphaPoint APEX) over its HTTP form: `POST {base_url}{path_prefix}/<Function>`.

Every call answers the generic envelope `{result, errormsg, errorcode, detail}`; CancelQuote
answers one per leg (`BidResult`, `AskResult`), or one for the whole request when APEX
refuses it before looking at the legs (a wrong OMS, say). `result: true` only acknowledges
receipt, hence ACCEPTED; the read APIs (`GetUserReportTickets`, `GetOpenQuotes`) are what
confirm. Facts and assumptions: docs/UPSTREAMS.md, "KIIEX".
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from adapters.http import (
    MISCONFIGURED,
    OPERATION,
    UNREADABLE,
    AuthRefused,
    Decoded,
    Exchange,
    Redactor,
    Requests,
    SharedLogin,
    UpstreamFailure,
    answered,
    failed_reply,
    http_client,
    json_body,
    login_client,
    retry_after,
    send,
    status_key,
)
from adapters.kiiex.codes import (
    CODES,
    DOCUMENTED_ERRORS,
    NOT_AUTHORIZED,
    OTHER_CODE,
    RATE_LIMIT_TEXT,
    SECRETS_IN_BODIES,
)
from adapters.kiiex.jobs import KiiexQuote, KiiexUserReport
from adapters.kiiex.options import ApiKeyLogin, KiiexOptions
from gateway.connection import ConnectionSettings
from gateway.errors import JobKindNotImplemented
from gateway.jobs import JobKind
from gateway.model import Delivery, JsonValue, LegResult, UpstreamReply
from gateway.secrets import SECRETS
from gateway.upstream import ConfirmState, LegCheck, Preflight

_redacted = Redactor(SECRETS_IN_BODIES)
_ORDER_WORKING, _ORDER_CANCELED = 1, 3
_CANCELLED_STATUSES = frozenset({"UserCancelled"})
_CANCEL_PENDING_STATUSES = frozenset({"UserCancelPending", "UserCancelledPending"})
_RUNNING_STATUSES = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Aborting"})


@dataclass(frozen=True)
class _Session:
    token: str
    user_id: int | None
    account_id: int | None


def _envelope(value: Any) -> tuple[str, str, str]:
    """(code, message, detail) of one generic envelope; a leg may come as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return UNREADABLE, "leg result is neither an object nor JSON text", ""
    if not isinstance(value, dict) or "result" not in value:
        return UNREADABLE, "no generic {result, errorcode} envelope", ""
    code = value.get("errorcode")
    message, detail = str(value.get("errormsg") or ""), str(value.get("detail") or "")
    if value["result"] is True and code in (0, None):
        return "0", message, detail
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        return str(code), message, detail
    if value["result"] is False and code is None:
        return OTHER_CODE, message, detail
    return UNREADABLE, f"contradictory envelope: result={value['result']!r} errorcode={code!r}", ""


def _leg(leg: str, envelope: Any) -> LegResult:
    code, message, detail = _envelope(envelope)
    verdict = CODES.get(code) or CODES[OTHER_CODE]
    return LegResult.from_verdict(leg, verdict, code, message, detail)


def _guid_matches(request_id: Any, report_id: str) -> bool:
    """Tickets carry base64 ids; APEX is .NET, so accept both GUID byte orders (unconfirmed)."""
    if not isinstance(request_id, str):
        return False
    try:
        raw = base64.b64decode(request_id, validate=True)
    except (binascii.Error, ValueError):
        return False
    wanted = uuid.UUID(report_id)
    return raw in (wanted.bytes, wanted.bytes_le)


class KiiexAdapter:
    def __init__(
        self, connection: ConnectionSettings, transport: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        self._options: KiiexOptions = connection.options
        self._client = http_client(connection, self._options.base_url, transport)
        self._requests = Requests(self._client)
        self._logins = login_client(connection, self._options.base_url, transport)
        self._sessions = SharedLogin(self._login)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._logins.aclose()

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        payload = _operation(job).payload(job)
        exchange = Exchange()

        async def cancel_once() -> UpstreamReply:
            answer = await self._call(job.operation, payload, timeout, exchange)
            return _reply(answer, job.legs)

        return await answered(
            cancel_once(),
            timeout=timeout,
            refused_code=NOT_AUTHORIZED,
            on_failure=lambda failure: failed_reply(
                CODES,
                job.legs,
                failure.code,
                failure.message,
                retry_after=failure.retry_after,
                delivery=exchange.delivery,
            ),
        )

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        return await answered(
            _operation(job).read(self, job, timeout),
            timeout=timeout,
            refused_code=NOT_AUTHORIZED,
            on_failure=lambda failure: tuple(
                LegCheck(leg, ConfirmState.PENDING, f"read failed: {failure.message}")
                for leg in job.legs
            ),
        )

    async def preflight(self, *, timeout: float) -> Preflight:
        """A fresh AuthenticateUser, as the first call would make."""

        async def login() -> Preflight:
            session = await self._login(timeout)
            return Preflight(True, f"AuthenticateUser issued a session (user {session.user_id})")

        return await answered(
            login(),
            timeout=timeout,
            refused_code=NOT_AUTHORIZED,
            on_failure=lambda failure: Preflight(False, f"AuthenticateUser: {failure.message}"),
        )

    async def _quote_checks(self, job: KiiexQuote, timeout: float) -> tuple[LegCheck, ...]:
        """Reads GetOpenQuotes: a quote that is gone, or shown Canceled, is confirmed."""
        session = await self._sessions.get(timeout)
        account = job.account_id or session.account_id
        if job.instrument_id is None or account is None:
            reason = "GetOpenQuotes needs the account and instrument; give both to confirm"
            return tuple(LegCheck(leg, ConfirmState.PENDING, reason) for leg in job.legs)
        query: JsonValue = {
            "OMSId": job.oms_id,
            "AccountId": account,
            "InstrumentId": job.instrument_id,
        }
        body = (await self._call("GetOpenQuotes", query, timeout)).json()
        # Both keys, or no verdict: a generic error envelope (errorcode 20, 102, ...) has
        # neither, and must not read as "no quote is open any more".
        if not isinstance(body, dict) or not {"bid", "ask"} <= body.keys():
            raise UpstreamFailure(UNREADABLE, "GetOpenQuotes: expected {bid, ask}")
        return (
            _quote_check("bid", job.bid_quote_id, body.get("bid")),
            _quote_check("ask", job.ask_quote_id, body.get("ask")),
        )

    async def _report_checks(self, job: KiiexUserReport, timeout: float) -> tuple[LegCheck, ...]:
        session = await self._sessions.get(timeout)
        answer = await self._call("GetUserReportTickets", {"UserId": session.user_id}, timeout)
        tickets = answer.json()
        if not isinstance(tickets, list):
            raise UpstreamFailure(UNREADABLE, "GetUserReportTickets: expected a list")
        for ticket in tickets:
            if isinstance(ticket, dict) and _guid_matches(
                ticket.get("RequestId"), job.user_report_id
            ):
                return (_report_check(str(ticket.get("RequestStatus"))),)
        return (LegCheck("report", ConfirmState.PENDING, "no ticket with this id yet"),)

    async def _call(
        self, function: str, payload: JsonValue, timeout: float, exchange: Exchange | None = None
    ) -> Decoded:
        """One function call with the shared session, renewed once if KIIEX says it is not."""

        async def send_with(session: _Session) -> Decoded:
            request = self._requests.json(
                f"{self._options.path_prefix}/{function}",
                payload,
                headers={self._options.token_header: session.token},
                operation=function,
            )
            return Decoded.of(await send(self._client, request, timeout, exchange))

        return await self._sessions.call(timeout, send_with, _says_not_authorized)

    async def _login(self, timeout: float) -> _Session:
        request = self._logins.build_request(
            "POST",
            f"{self._options.path_prefix}/AuthenticateUser",
            json=self._options.login.payload(),
            extensions={OPERATION: "AuthenticateUser"},
        )
        body = _login_body(await send(self._logins, request, timeout))
        token = body.get(self._options.token_field)
        if not isinstance(token, str) or not token:
            raise _login_refusal(body, self._options.token_field)
        # A token goes into a header: anything but printable ASCII could not be sent (and an
        # error quoting it would leak it).
        SECRETS.issued(token)  # from now on scrubbed, even if unusable
        if not (token.isascii() and token.isprintable()):
            raise UpstreamFailure(UNREADABLE, "AuthenticateUser: the session token is unusable")
        user = body.get("User")
        user = user if isinstance(user, dict) else {}
        login = self._options.login
        configured_user = login.user_id if isinstance(login, ApiKeyLogin) else None
        return _Session(
            token, _int(user.get("UserId")) or configured_user, _int(user.get("AccountId"))
        )


def _login_body(response: httpx2.Response) -> dict[str, Any]:
    """The AuthenticateUser answer as an object; trouble that is no refusal raises as such."""
    status = response.status_code
    if response.text.strip().upper() == RATE_LIMIT_TEXT:
        raise UpstreamFailure(
            RATE_LIMIT_TEXT, "AuthenticateUser: rate limited", retry_after(response)
        )
    if status in (401, 403):
        raise AuthRefused(f"AuthenticateUser: HTTP {status}")
    if status == 404:  # no login there: the connection points at the wrong place
        raise UpstreamFailure(
            MISCONFIGURED, "AuthenticateUser answered HTTP 404: check base_url and path_prefix"
        )
    if not response.is_success:
        key = status_key(CODES, status)
        raise UpstreamFailure(key, f"AuthenticateUser: HTTP {status}", retry_after(response))
    body = json_body(response)
    if not isinstance(body, dict):
        raise UpstreamFailure(UNREADABLE, "AuthenticateUser: expected an object")
    return body


def _login_refusal(body: dict[str, Any], token_field: str) -> Exception:
    """No token: a refusal of the credentials, unless KIIEX says its own side failed."""
    code, message, _ = _envelope(body)
    if code in CODES and code not in (NOT_AUTHORIZED, OTHER_CODE, UNREADABLE, "0"):
        return UpstreamFailure(code, f"AuthenticateUser: {message or code}")
    reason = body.get("errormsg") or f"no {token_field} in the answer"
    return AuthRefused(f"AuthenticateUser: {reason}")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _says_not_authorized(answer: Decoded) -> bool:
    """The session was refused, and nothing of the request was done: only then is it sent
    again after a new login (a leg that answered 0 beside a refused one has been canceled,
    and sending it again would cancel it twice)."""
    if answer.response.status_code == 401:
        return True
    body = answer.body
    envelopes = (
        [body.get("BidResult"), body.get("AskResult"), body] if isinstance(body, dict) else []
    )
    codes = {_envelope(e)[0] for e in envelopes if e is not None}
    return NOT_AUTHORIZED in codes and "0" not in codes


def _reply(answer: Decoded, legs: tuple[str, ...]) -> UpstreamReply:
    response = answer.response
    if answer.failure is not None and response.text.strip().upper() == RATE_LIMIT_TEXT:
        return _http_failure(response, legs, RATE_LIMIT_TEXT)
    status = status_key(CODES, response.status_code)
    if status == "HTTP 429":  # a limit on requests, whatever the body says of the job
        return _http_failure(response, legs, status)
    try:
        body = answer.json()
    except UpstreamFailure as failure:
        if response.is_success:
            return _unreadable(legs, failure.message, _redacted.raw_text(response))
        return _http_failure(response, legs, status)
    envelopes = _leg_envelopes(body, legs)
    if envelopes is None:
        if response.is_success:
            return _unreadable(legs, "expected {BidResult, AskResult}", _redacted(body))
        return _http_failure(response, legs, status, _redacted(body))
    results = tuple(_leg(leg, envelope) for leg, envelope in zip(legs, envelopes, strict=True))
    if not response.is_success and not _says_more_than(results):
        return _http_failure(response, legs, status, _redacted(body))
    # A 2xx whose answer cannot be read does not say the cancel was not applied.
    unread = any(r.upstream_code == UNREADABLE for r in results)
    return UpstreamReply(
        results,
        _redacted(body),
        retry_after(response),
        Delivery.NO_ANSWER if unread else Delivery.ANSWERED,
    )


def _says_more_than(results: tuple[LegResult, ...]) -> bool:
    """Body code, then HTTP status: on an error status the legs' codes count only when one
    is a documented error and the others documented too (a leg that says 0 beside it keeps
    its word, so the job is PARTIAL rather than re-sent whole)."""
    codes = {r.upstream_code for r in results}
    return bool(codes & DOCUMENTED_ERRORS) and codes <= DOCUMENTED_ERRORS | {"0"}


def _unreadable(legs: tuple[str, ...], message: str, body: JsonValue) -> UpstreamReply:
    """A 2xx answer of no documented shape: the cancel may have been applied."""
    return failed_reply(CODES, legs, UNREADABLE, message, body=body, delivery=Delivery.NO_ANSWER)


def _leg_envelopes(body: JsonValue, legs: tuple[str, ...]) -> list[Any] | None:
    """The generic envelope answering each leg, or None when the body has no such shape."""
    if len(legs) == 1:
        return [body]
    if isinstance(body, dict) and ("BidResult" in body or "AskResult" in body):
        return [body.get("BidResult"), body.get("AskResult")]
    if isinstance(body, dict) and "result" in body:
        # One answer for the whole request (APEX's form for refusing it as a whole) answers
        # both legs; every documented code reads as it does on CancelUserReport.
        return [body] * len(legs)
    return None


def _http_failure(
    response: httpx2.Response, legs: tuple[str, ...], key: str, body: JsonValue = None
) -> UpstreamReply:
    status = f"HTTP {response.status_code}"
    return failed_reply(
        CODES,
        legs,
        key,
        status,
        body=body or _redacted.raw_text(response),
        shown_code=status,
        retry_after=retry_after(response),
    )


def _report_check(status: str) -> LegCheck:
    if status in _CANCELLED_STATUSES:
        return LegCheck("report", ConfirmState.CONFIRMED, f"RequestStatus {status}")
    if status in _CANCEL_PENDING_STATUSES:
        return LegCheck("report", ConfirmState.PENDING, f"RequestStatus {status}")
    if status in _RUNNING_STATUSES:
        return LegCheck("report", ConfirmState.ACTIVE, f"RequestStatus {status}")
    return LegCheck("report", ConfirmState.REFUTED, f"report ended as {status}")


def _quote_check(leg: str, quote_id: int, open_quote: Any) -> LegCheck:
    if not isinstance(open_quote, dict) or open_quote.get("orderId") != quote_id:
        return LegCheck(leg, ConfirmState.CONFIRMED, f"quote {quote_id} is no longer open")
    state = open_quote.get("orderState")
    if state == _ORDER_CANCELED:
        return LegCheck(leg, ConfirmState.CONFIRMED, f"quote {quote_id} orderState Canceled")
    # Working: no sign of a cancel yet; any other state: cannot tell.
    seen = ConfirmState.ACTIVE if state == _ORDER_WORKING else ConfirmState.PENDING
    return LegCheck(leg, seen, f"quote {quote_id} still open (orderState {state})")


@dataclass(frozen=True)
class _Operation:
    """What the adapter does for one job kind: the cancel's body, and the read that confirms it."""

    payload: Callable[[Any], dict[str, JsonValue]]
    read: Callable[[KiiexAdapter, Any, float], Awaitable[tuple[LegCheck, ...]]]


_OPERATIONS: dict[type[JobKind], _Operation] = {
    KiiexUserReport: _Operation(KiiexUserReport.payload, KiiexAdapter._report_checks),
    KiiexQuote: _Operation(KiiexQuote.payload, KiiexAdapter._quote_checks),
}


def _operation(job: JobKind) -> _Operation:
    """The job kind's operations; a kind KIIEX does not serve is refused before anything is
    sent, by cancel and confirm alike."""
    operation = _OPERATIONS.get(type(job))
    if operation is None:
        raise JobKindNotImplemented(f"KIIEX serves no {type(job).__name__}")
    return operation
