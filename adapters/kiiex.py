"""KIIEX (AlphaPoint APEX) over its HTTP form: `POST {base_url}{path_prefix}/<Function>`.

Every call answers the generic envelope `{result, errormsg, errorcode, detail}` (CancelQuote
answers one per leg). `result: true` only acknowledges receipt, hence ACCEPTED; the read API
(`GetUserReportTickets`) is what confirms. Facts and assumptions: shared/upstreams.md, part 1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from adapters.base import (
    COMMON_CODES,
    OPERATION,
    UNREADABLE,
    CodeTable,
    ConfirmState,
    LegCheck,
    Upstream,
    UpstreamFailure,
    failed_reply,
    http_client,
    json_body,
    raw_text,
    redacted,
    retry_after,
    send,
    status_key,
    verdict_for,
)
from adapters.sessions import AuthRefused, SharedLogin
from gateway.config import ConfigError, ConnectionSettings, Table
from gateway.jobs import Job, KiiexQuote, KiiexUserReport
from gateway.model import JsonValue, LegResult, Outcome, Reason, UpstreamReply, Verdict

NOT_AUTHORIZED = "20"
OTHER_CODE = "other"
RATE_LIMIT_TEXT = "TOO MANY REQUESTS"

CODES: CodeTable = {
    "0": Verdict(Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "received; not proof it stopped"),
    NOT_AUTHORIZED: Verdict(
        Outcome.FAILED, Reason.UNAUTHORIZED, False, "Not Authorized, still after one re-login"
    ),
    "100": Verdict(Outcome.FAILED, Reason.INVALID_REQUEST, False, "Invalid Request"),
    "101": Verdict(Outcome.FAILED, Reason.OPERATION_FAILED, False, "Operation Failed"),
    "102": Verdict(Outcome.FAILED, Reason.UPSTREAM_ERROR, True, "Server Error"),
    "104": Verdict(Outcome.FAILED, Reason.NOT_FOUND, False, "Resource Not Found"),
    "106": Verdict(Outcome.FAILED, Reason.NOT_SUPPORTED, False, "Operation Not Supported"),
    OTHER_CODE: Verdict(
        Outcome.FAILED, Reason.UPSTREAM_ERROR, False, "an errorcode no public source lists"
    ),
    "HTTP 400": Verdict(Outcome.FAILED, Reason.INVALID_REQUEST, False, "proxy: invalid request"),
    "HTTP 401": Verdict(
        Outcome.FAILED, Reason.UNAUTHORIZED, False, "proxy: unauthorized, still after re-login"
    ),
    "HTTP 429": Verdict(Outcome.FAILED, Reason.RATE_LIMITED, True, "rate limited"),
    RATE_LIMIT_TEXT: Verdict(
        Outcome.FAILED, Reason.RATE_LIMITED, True, "APEX's plain-text rate-limit body"
    ),
    "HTTP 5xx": Verdict(Outcome.FAILED, Reason.UPSTREAM_ERROR, True, "server-side failure"),
    "HTTP other": Verdict(
        Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False, "an undocumented HTTP status"
    ),
    **COMMON_CODES,
}

_ORDER_CANCELED = 3
_CANCELLED_STATUSES = frozenset({"UserCancelled"})
_PENDING_STATUSES = frozenset(
    {"UserCancelPending", "UserCancelledPending", "Submitted", "Validating", "Scheduled",
     "InProgress", "Aborting"}
)  # fmt: skip


@dataclass(frozen=True)
class PasswordLogin:
    username: str
    password: str

    def payload(self) -> dict[str, str]:
        return {"UserName": self.username, "Password": self.password}


@dataclass(frozen=True)
class ApiKeyLogin:
    api_key: str
    api_secret: str
    user_id: int

    def payload(self) -> dict[str, str]:
        # APEX 3.3+ sends UserId and Nonce as strings; the signature is over their concatenation.
        nonce = str(time.time_ns())
        message = f"{nonce}{self.user_id}{self.api_key}".encode()
        signature = hmac.new(self.api_secret.encode(), message, hashlib.sha256).hexdigest()
        return {
            "APIKey": self.api_key,
            "Signature": signature,
            "UserId": str(self.user_id),
            "Nonce": nonce,
        }


@dataclass(frozen=True)
class KiiexOptions:
    base_url: str
    path_prefix: str
    token_header: str
    token_field: str
    login: PasswordLogin | ApiKeyLogin


def parse_options(table: Table) -> KiiexOptions:
    prefix = table.string("path_prefix", "/ap").rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"{table.key('path_prefix')}: must start with '/', got {prefix!r}")
    login: PasswordLogin | ApiKeyLogin
    if table.has("api_key_env"):
        login = ApiKeyLogin(
            table.secret("api_key_env"), table.secret("api_secret_env"), table.integer("user_id")
        )
    else:
        login = PasswordLogin(table.secret("username_env"), table.secret("password_env"))
    return KiiexOptions(
        base_url=table.url("base_url"),
        path_prefix=prefix,
        token_header=table.string("token_header", "aptoken"),
        token_field=table.string("token_field", "SessionToken"),
        login=login,
    )


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
    return LegResult.from_verdict(leg, verdict_for(CODES, code, OTHER_CODE), code, message, detail)


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
    upstream: ClassVar[str] = "kiiex"
    jobs: ClassVar[tuple[type, ...]] = (KiiexUserReport, KiiexQuote)

    def __init__(
        self, connection: ConnectionSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._options: KiiexOptions = connection.options
        self._client = http_client(connection, self._options.base_url, transport)
        self._sessions = SharedLogin(self._login)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def cancel(self, job: Job, timeout: float) -> UpstreamReply:
        legs = _legs(job)
        try:
            response = await self._call(job.operation, _cancel_payload(job), timeout)
        except UpstreamFailure as failure:
            return failed_reply(CODES, legs, failure.code, failure.message)
        except AuthRefused as refused:
            return failed_reply(CODES, legs, NOT_AUTHORIZED, f"AuthenticateUser: {refused}")
        return _reply(response, legs)

    async def confirm(self, job: Job, timeout: float) -> tuple[LegCheck, ...]:
        try:
            if isinstance(job, KiiexUserReport):
                return (await self._report_check(job, timeout),)
            if isinstance(job, KiiexQuote):
                return await self._quote_checks(job, timeout)
        except (UpstreamFailure, AuthRefused) as failure:
            return tuple(
                LegCheck(leg, ConfirmState.PENDING, f"read failed: {failure}") for leg in _legs(job)
            )
        return ()

    async def _quote_checks(self, job: KiiexQuote, timeout: float) -> tuple[LegCheck, ...]:
        """Reads GetOpenQuotes: a quote that is gone, or shown Canceled, is confirmed."""
        session = await self._sessions.get(timeout)
        account = job.account_id or session.account_id
        if job.instrument_id is None or account is None:
            reason = "GetOpenQuotes needs the account and instrument; give both to confirm"
            return tuple(LegCheck(leg, ConfirmState.PENDING, reason) for leg in _legs(job))
        query: JsonValue = {
            "OMSId": job.oms_id,
            "AccountId": account,
            "InstrumentId": job.instrument_id,
        }
        body = json_body(await self._call("GetOpenQuotes", query, timeout))
        if not isinstance(body, dict):
            raise UpstreamFailure(UNREADABLE, "GetOpenQuotes: expected {bid, ask}")
        return (
            _quote_check("bid", job.bid_quote_id, body.get("bid")),
            _quote_check("ask", job.ask_quote_id, body.get("ask")),
        )

    async def _report_check(self, job: KiiexUserReport, timeout: float) -> LegCheck:
        session = await self._sessions.get(timeout)
        response = await self._call("GetUserReportTickets", {"UserId": session.user_id}, timeout)
        tickets = json_body(response)
        if not isinstance(tickets, list):
            raise UpstreamFailure(UNREADABLE, "GetUserReportTickets: expected a list")
        for ticket in tickets:
            if isinstance(ticket, dict) and _guid_matches(
                ticket.get("RequestId"), job.user_report_id
            ):
                return _report_check(str(ticket.get("RequestStatus")))
        return LegCheck("report", ConfirmState.PENDING, "no ticket with this id yet")

    async def _call(self, function: str, payload: JsonValue, timeout: float) -> httpx.Response:
        """One function call, re-logging in once when KIIEX says the session is not valid."""
        for attempt in (1, 2):
            session = await self._sessions.get(timeout)
            request = self._client.build_request(
                "POST",
                f"{self._options.path_prefix}/{function}",
                json=payload,
                headers={self._options.token_header: session.token},
                extensions={OPERATION: function},
            )
            response = await send(self._client, request, timeout)
            if attempt == 2 or not _says_not_authorized(response):
                return response
            self._sessions.forget(session)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _login(self, timeout: float) -> _Session:
        request = self._client.build_request(
            "POST",
            f"{self._options.path_prefix}/AuthenticateUser",
            json=self._options.login.payload(),
            extensions={OPERATION: "AuthenticateUser"},
        )
        body = json_body(await send(self._client, request, timeout))
        token = body.get(self._options.token_field) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            message = body.get("errormsg") if isinstance(body, dict) else None
            raise AuthRefused(str(message or f"no {self._options.token_field} in the answer"))
        user = body.get("User") if isinstance(body, dict) else None
        user = user if isinstance(user, dict) else {}
        login = self._options.login
        configured_user = login.user_id if isinstance(login, ApiKeyLogin) else None
        return _Session(
            token, _int(user.get("UserId")) or configured_user, _int(user.get("AccountId"))
        )


def _legs(job: Job) -> tuple[str, ...]:
    return ("bid", "ask") if isinstance(job, KiiexQuote) else ("report",)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cancel_payload(job: Job) -> dict[str, JsonValue]:
    if isinstance(job, KiiexUserReport):
        return {"UserReportId": job.user_report_id}
    if isinstance(job, KiiexQuote):
        payload: dict[str, JsonValue] = {
            "omsId": job.oms_id,
            "bidQuoteId": job.bid_quote_id,
            "askQuoteId": job.ask_quote_id,
        }
        # Absent means "KIIEX default" (account) or "all instruments"; only send what was set.
        if job.account_id is not None:
            payload["accountId"] = job.account_id
        if job.instrument_id is not None:
            payload["instrumentId"] = job.instrument_id
        return payload
    raise TypeError(f"KIIEX does not cancel {type(job).__name__}")


def _says_not_authorized(response: httpx.Response) -> bool:
    if response.status_code == 401:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    envelopes = (
        [body.get("BidResult"), body.get("AskResult"), body] if isinstance(body, dict) else []
    )
    return any(_envelope(e)[0] == NOT_AUTHORIZED for e in envelopes if e is not None)


def _reply(response: httpx.Response, legs: tuple[str, ...]) -> UpstreamReply:
    if response.text.strip().upper() == RATE_LIMIT_TEXT:
        return _http_failure(response, legs, RATE_LIMIT_TEXT)
    try:
        body = json_body(response)
    except UpstreamFailure as failure:
        if response.is_success:
            return failed_reply(CODES, legs, UNREADABLE, failure.message, raw_text(response))
        return _http_failure(response, legs, status_key(CODES, response.status_code))
    if not response.is_success and _envelope(body)[0] in (UNREADABLE, "0"):
        return _http_failure(
            response, legs, status_key(CODES, response.status_code), redacted(body)
        )
    if legs == ("report",):
        return UpstreamReply((_leg("report", body),), redacted(body))
    if not isinstance(body, dict):
        return failed_reply(
            CODES, legs, UNREADABLE, "expected {BidResult, AskResult}", redacted(body)
        )
    return UpstreamReply(
        (_leg("bid", body.get("BidResult")), _leg("ask", body.get("AskResult"))), redacted(body)
    )


def _http_failure(
    response: httpx.Response, legs: tuple[str, ...], key: str, body: JsonValue = None
) -> UpstreamReply:
    status = f"HTTP {response.status_code}"
    reply = failed_reply(CODES, legs, key, status, body or raw_text(response), status)
    return UpstreamReply(reply.legs, reply.body, retry_after(response))


def _report_check(status: str) -> LegCheck:
    if status in _CANCELLED_STATUSES:
        return LegCheck("report", ConfirmState.CONFIRMED, f"RequestStatus {status}")
    if status in _PENDING_STATUSES:
        return LegCheck("report", ConfirmState.PENDING, f"RequestStatus {status}")
    return LegCheck("report", ConfirmState.REFUTED, f"report ended as {status}")


def _quote_check(leg: str, quote_id: int, open_quote: Any) -> LegCheck:
    if not isinstance(open_quote, dict) or open_quote.get("orderId") != quote_id:
        return LegCheck(leg, ConfirmState.CONFIRMED, f"quote {quote_id} is no longer open")
    state = open_quote.get("orderState")
    if state == _ORDER_CANCELED:
        return LegCheck(leg, ConfirmState.CONFIRMED, f"quote {quote_id} orderState Canceled")
    return LegCheck(leg, ConfirmState.PENDING, f"quote {quote_id} still open (orderState {state})")


UPSTREAM = Upstream("kiiex", parse_options, KiiexAdapter, KiiexAdapter.jobs, CODES)
