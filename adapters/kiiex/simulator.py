"""KIIEX / AlphaPoint APEX HTTP dialect: ``POST {prefix}/<FunctionName>`` with JSON."""

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from json import JSONDecodeError
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.kiiex import KiiexQuote, KiiexUserReport
from adapters.simulation import Clock, Example, SandboxUpstream, TokenStore, Traceparents
from adapters.simulation.faults import FaultQueue

Body = dict[str, Any]

_MESSAGES = {
    0: None,
    20: "Not Authorized",
    100: "Invalid Request",
    101: "Operation Failed",
    104: "Resource Not Found",
}
_FINISHED = frozenset({"Completed", "Aborted", "SysRetired"})
_CANCELLED = frozenset({"UserCancelPending", "UserCancelled"})
# Ticket timestamps play no part in cancellation; a constant keeps runs reproducible.
_TICKET_TIME = "2024-01-01T00:00:00Z"
_TICKET_TIMES = ("createTime", "initialRunTime", "intervalStartTime", "intervalEndTime")
_ZERO_ID = base64.b64encode(bytes(16)).decode()
WORKING, CANCELED = 1, 3
BUY, SELL = 0, 1
_LIMIT_ORDER = 2


def api_signature(secret: str, nonce: str, user_id: str, api_key: str) -> str:
    """APEX API-key signature: hex HMAC-SHA256 over ``Nonce + UserId + APIKey``."""
    message = (nonce + user_id + api_key).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _generic(errorcode: int = 0, detail: str | None = None) -> Body:
    return {
        "result": errorcode == 0,
        "errormsg": _MESSAGES[errorcode],
        "errorcode": errorcode,
        "detail": detail,
    }


class _InvalidRequestError(ValueError):
    """Raised while reading arguments; becomes errorcode 100."""


def _int_arg(body: Body, key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _InvalidRequestError(f"{key} must be an integer")
    return value


def _optional_int_arg(body: Body, key: str) -> int | None:
    return None if body.get(key) is None else _int_arg(body, key)


def _guid_arg(body: Body, key: str) -> str:
    try:
        return str(uuid.UUID(str(body[key])))
    except (KeyError, ValueError) as exc:
        raise _InvalidRequestError(f"{key} must be a GUID string") from exc


def _str_args(body: Body, *keys: str) -> tuple[str, ...] | None:
    strings = [value for key in keys if isinstance(value := body.get(key), str)]
    return tuple(strings) if len(strings) == len(keys) else None


async def _json_body(request: Request) -> Body:
    try:
        body = await request.json()
    except (JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


@dataclass
class _Report:
    status: str
    settles_at: float | None = None


@dataclass
class _Quote:
    order_id: int
    side: int
    instrument: int
    account: int
    oms: int
    price: float
    state: int = WORKING

    def to_json(self) -> Body:
        return {
            "orderId": self.order_id,
            "orderState": self.state,
            "side": self.side,
            "price": self.price,
            "quantity": 1.0,
            "displayQuantity": 1.0,
            "instrument": self.instrument,
            "account": self.account,
            "orderType": _LIMIT_ORDER,
            "ClientOrderId": 0,
            "omsId": self.oms,
        }


@dataclass(frozen=True)
class _QuoteFilter:
    oms: int
    account: int
    instrument: int | None

    def admits(self, quote: _Quote, side: int) -> bool:
        return (
            quote.state == WORKING
            and quote.side == side
            and (quote.oms, quote.account) == (self.oms, self.account)
            and self.instrument in (None, quote.instrument)
        )


@dataclass
class KiiexSimulator:
    """Stateful APEX server: seed reports/quotes, serve ``.app``, inspect the outcome."""

    path_prefix: str = "/ap"
    token_header: str = "aptoken"
    users: dict[str, str] = field(default_factory=lambda: {"operator": "operator-pass"})
    api_keys: dict[str, tuple[str, int]] = field(
        default_factory=lambda: {"sim-api-key": ("sim-api-secret", 1)}
    )
    user_id: int = 1
    account_id: int = 7
    oms_id: int = 1
    session_ttl: float = 3600.0
    unauthorized_style: Literal["errorcode", "http401"] = "errorcode"
    quote_results_as_strings: bool = False
    cancel_settle_seconds: float = 0.0
    clock: Clock = time.monotonic
    login_count: int = field(default=0, init=False)
    calls: Counter[str] = field(default_factory=Counter, init=False)
    traceparents: Traceparents = field(default_factory=Traceparents, init=False)
    faults: FaultQueue = field(
        default_factory=lambda: FaultQueue(rate_limit_body="TOO MANY REQUESTS"), init=False
    )

    def __post_init__(self) -> None:
        self._sessions = TokenStore(self.session_ttl, self.clock)
        self._reports: dict[str, _Report] = {}
        self._quotes: dict[int, _Quote] = {}
        self._quote_ids = itertools.count(1001)
        self._handlers: dict[str, Callable[[Body], object]] = {
            "CancelUserReport": self._cancel_user_report,
            "GetUserReportTickets": self._get_user_report_tickets,
            "CancelQuote": self._cancel_quote,
            "GetOpenQuotes": self._get_open_quotes,
        }
        route = f"{self.path_prefix}/{{function}}"
        self.app = Starlette(routes=[Route(route, self._dispatch, methods=["POST"])])

    def add_report(self, report_id: str | None = None, status: str = "Scheduled") -> str:
        key = str(uuid.UUID(report_id)) if report_id else str(uuid.uuid4())
        self._reports[key] = _Report(status)
        return key

    def report_status(self, report_id: str) -> str:
        report = self._reports[str(uuid.UUID(report_id))]
        if report.settles_at is not None and self.clock() >= report.settles_at:
            report.status, report.settles_at = "UserCancelled", None
        return report.status

    def add_quote_pair(
        self, instrument_id: int = 1, account_id: int | None = None
    ) -> tuple[int, int]:
        account = self.account_id if account_id is None else account_id
        ids = next(self._quote_ids), next(self._quote_ids)
        for order_id, side, price in zip(ids, (BUY, SELL), (100.0, 101.0), strict=True):
            self._quotes[order_id] = _Quote(
                order_id, side, instrument_id, account, self.oms_id, price
            )
        return ids

    def quote_state(self, quote_id: int) -> int:
        return self._quotes[quote_id].state

    def expire_sessions(self) -> None:
        self._sessions.expire_all()

    @property
    def issued_tokens(self) -> list[str]:
        return self._sessions.issued

    async def _dispatch(self, request: Request) -> Response:
        name = request.path_params["function"]
        is_login = name == "AuthenticateUser"
        handler = self._handlers.get(name)
        if handler is None and not is_login:
            return PlainTextResponse("Not Found", 404)
        self.calls[name] += 1
        self.traceparents.heard(name, request.headers)

        async def respond() -> Response:
            body = await _json_body(request)
            if handler is None:
                return JSONResponse(self._authenticate(body))
            if not self._sessions.is_live(request.headers.get(self.token_header)):
                status = 401 if self.unauthorized_style == "http401" else 200
                return JSONResponse(_generic(20), status)
            try:
                return JSONResponse(handler(body))
            except _InvalidRequestError as exc:
                return JSONResponse(_generic(100, str(exc)))

        return await self.faults.answer(auth=is_login, respond=respond)

    def _authenticate(self, body: Body) -> Body:
        user_id = self._api_key_user(body) if "APIKey" in body else self._password_user(body)
        if user_id is None:
            return {"Authenticated": False, "errormsg": "Invalid username or password"}
        self.login_count += 1
        # The API-key form may carry an optional UserName too; echo whatever was sent.
        user = {"UserId": user_id, "UserName": body.get("UserName")}
        user |= {"AccountId": self.account_id, "OMSId": self.oms_id}
        return {
            "Authenticated": True,
            "SessionToken": self._sessions.issue(),
            "User": user,
            "errormsg": None,
        }

    def _password_user(self, body: Body) -> int | None:
        args = _str_args(body, "UserName", "Password")
        valid = args is not None and self.users.get(args[0]) == args[1]
        return self.user_id if valid else None

    def _api_key_user(self, body: Body) -> int | None:
        args = _str_args(body, "APIKey", "Signature", "UserId", "Nonce")
        if args is None or args[0] not in self.api_keys:
            return None
        api_key, signature, user_id, nonce = args
        secret, key_user_id = self.api_keys[api_key]
        expected = api_signature(secret, nonce, user_id, api_key)
        valid = user_id == str(key_user_id) and hmac.compare_digest(expected, signature)
        return key_user_id if valid else None

    def _cancel_user_report(self, body: Body) -> Body:
        report_id = _guid_arg(body, "UserReportId")
        if report_id not in self._reports:
            return _generic(104, f"no report {report_id}")
        status = self.report_status(report_id)
        if status in _FINISHED:
            return _generic(101, f"report is {status}")
        if status not in _CANCELLED:
            self._reports[report_id] = _Report(
                "UserCancelPending", self.clock() + self.cancel_settle_seconds
            )
        return _generic()

    def _get_user_report_tickets(self, body: Body) -> list[Body]:
        if _int_arg(body, "UserId") != self.user_id:
            return []
        return [self._ticket(report_id) for report_id in self._reports]

    def _ticket(self, report_id: str) -> Body:
        return {
            "RequestingUser": self.user_id,
            "OMSId": self.oms_id,
            "reportFlavor": "TradeActivity",
            **dict.fromkeys(_TICKET_TIMES, _TICKET_TIME),
            "RequestStatus": self.report_status(report_id),
            "ReportFrequency": "Daily",
            "intervalDuration": 86400,
            "RequestId": base64.b64encode(uuid.UUID(report_id).bytes).decode(),
            "lastInstanceId": _ZERO_ID,
            "accountIds": [self.account_id],
        }

    def _cancel_quote(self, body: Body) -> Body:
        """Request-level errors (bad arguments, a wrong OMS) come back as one generic
        envelope, as APEX answers them; otherwise one envelope per leg."""
        try:
            oms = _int_arg(body, "omsId")
            account = _optional_int_arg(body, "accountId")
            instrument = _optional_int_arg(body, "instrumentId")
            bid_id, ask_id = _int_arg(body, "bidQuoteId"), _int_arg(body, "askQuoteId")
        except _InvalidRequestError as exc:
            return _generic(100, str(exc))
        if oms != self.oms_id:
            return _generic(100, f"no OMS {oms}")
        quotes = _QuoteFilter(oms, self.account_id if account is None else account, instrument)
        bid, ask = self._cancel_leg(quotes, bid_id, BUY), self._cancel_leg(quotes, ask_id, SELL)
        return {"BidResult": self._leg(bid), "AskResult": self._leg(ask)}

    def _cancel_leg(self, quotes: _QuoteFilter, quote_id: int, side: int) -> Body:
        quote = self._quotes.get(quote_id)
        if quote is None or not quotes.admits(quote, side):
            return _generic(104, f"no working quote {quote_id}")
        quote.state = CANCELED
        return _generic()

    def _leg(self, result: Body) -> object:
        return json.dumps(result) if self.quote_results_as_strings else result

    def _get_open_quotes(self, body: Body) -> Body:
        quotes = _QuoteFilter(
            _int_arg(body, "OMSId"), _int_arg(body, "AccountId"), _int_arg(body, "InstrumentId")
        )
        return {"bid": self._open_quote(quotes, BUY), "ask": self._open_quote(quotes, SELL)}

    def _open_quote(self, quotes: _QuoteFilter, side: int) -> Body:
        working = (q for q in self._quotes.values() if quotes.admits(q, side))
        return next((q.to_json() for q in working), {})


# Fixed ids so the README and the printed examples stay valid from run to run.
EXAMPLE_REPORT = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
MISSING_REPORT = "00000000-0000-4000-8000-000000000000"
EXAMPLE_INSTRUMENT = 1


def _seed(simulator: KiiexSimulator) -> list[Example]:
    simulator.add_report(EXAMPLE_REPORT)
    bid, ask = simulator.add_quote_pair(instrument_id=EXAMPLE_INSTRUMENT)
    quote = KiiexQuote(
        oms_id=simulator.oms_id,
        instrument_id=EXAMPLE_INSTRUMENT,
        bid_quote_id=bid,
        ask_quote_id=ask,
    )
    return [
        Example(
            KiiexUserReport(EXAMPLE_REPORT),
            "ACCEPTED (KIIEX acknowledges receipt); add --confirm to poll until CANCELED",
        ),
        Example(KiiexUserReport(MISSING_REPORT), "FAILED with REASON_NOT_FOUND"),
        Example(quote, "ACCEPTED with a bid and an ask leg"),
    ]


SANDBOX = SandboxUpstream(
    simulator=KiiexSimulator,
    seed=_seed,
    connection=lambda base_url: {
        "upstream": "kiiex",
        "base_url": base_url,
        "username_env": "SANDBOX_KIIEX_USERNAME",
        "password_env": "SANDBOX_KIIEX_PASSWORD",
    },
    environ={"SANDBOX_KIIEX_USERNAME": "operator", "SANDBOX_KIIEX_PASSWORD": "operator-pass"},
)
