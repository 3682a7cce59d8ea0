"""Zuora Reporting API: `DELETE {base}{api_prefix}/reportruns/{id}`.

Two host families: the REST hosts (`rest.*`), where only an OAuth bearer token works, and
the older Reporting hosts (`zconnect*`), where only the legacy `apiAccessKeyId` /
`apiSecretAccessKey` headers work. A 200 can still be a failure (`success: false`), so the
body decides before the status does: a documented `reasons[].code` category (6-digit
resource + 2-digit category) maps by that category; an undocumented one says no more than
the HTTP status; then the success text. Facts and assumptions: docs/UPSTREAMS.md, "Zuora".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx2

from adapters.codes import COMMON_CODES, UNREADABLE, failed_reply, status_key
from adapters.guard import AuthRefused, UpstreamFailure, answered
from adapters.http import (
    OPERATION,
    Exchange,
    Requests,
    http_client,
    json_body,
    login_client,
    raw_text,
    redacted,
    retry_after,
    send,
)
from adapters.sessions import SharedLogin
from gateway.config import ConfigError, ConnectionSettings, Table
from gateway.jobs import JobKind, ZuoraReportRun
from gateway.model import Delivery, JsonValue, Outcome, Reason, UpstreamReply, Verdict
from gateway.secrets import SECRETS
from gateway.upstream import CodeTable, ConfirmState, LegCheck, Upstream

LEG = "report_run"
CANCELED_TEXT = "has been canceled"
ALREADY_CANCELED_TEXT = "was canceled"
UNRECOGNIZED_SUCCESS = "success: other text"
OTHER_CATEGORY = "category other"

OAUTH, LEGACY = "oauth", "legacy"

# Each data center has a REST host (OAuth only) and an older Reporting host (legacy
# credential headers only); a preset names one host, and so the credentials it takes.
_HOSTS = {
    "us-production": ("rest.zuora.com", "zconnect.zuora.com"),
    "us-sandbox": ("rest.apisandbox.zuora.com", "zconnectsandbox.zuora.com"),
    "us-cloud-production": ("rest.na.zuora.com", "zconnect.na.zuora.com"),
    "us-cloud-sandbox": ("rest.sandbox.na.zuora.com", "zconnect.sandbox.na.zuora.com"),
    "us-central-sandbox": ("rest.test.zuora.com", "zconnect-services0001.test.zuora.com"),
    "eu-production": ("rest.eu.zuora.com", "zconnect.eu.zuora.com"),
    "eu-sandbox": ("rest.sandbox.eu.zuora.com", "zconnect.sandbox.eu.zuora.com"),
    "eu-central-sandbox": ("rest.test.eu.zuora.com", "zconnect-services0002.test.eu.zuora.com"),
    "apac-production": ("rest.ap.zuora.com", "zconnect-prod05.ap.zuora.com"),
    "apac-sandbox": ("rest.test.ap.zuora.com", "zconnect-services0003.test.ap.zuora.com"),
}
DATA_CENTERS: dict[str, tuple[str, str]] = {
    **{name: (f"https://{rest}", OAUTH) for name, (rest, _) in _HOSTS.items()},
    **{f"{name}-zconnect": (f"https://{old}", LEGACY) for name, (_, old) in _HOSTS.items()},
}
"""Preset name -> (base URL, the credentials that host accepts)."""

_F = Outcome.FAILED
CODES: CodeTable = {
    CANCELED_TEXT: Verdict(Outcome.CANCELED, Reason.UNSPECIFIED, False, "success, first cancel"),
    ALREADY_CANCELED_TEXT: Verdict(
        Outcome.ALREADY_CANCELED, Reason.UNSPECIFIED, False, "success, a repeat cancel"
    ),
    UNRECOGNIZED_SUCCESS: Verdict(
        _F, Reason.BAD_UPSTREAM_RESPONSE, False, "success with an undocumented text"
    ),
    "HTTP 400": Verdict(_F, Reason.INVALID_REQUEST, False, "bad request"),
    "HTTP 401": Verdict(_F, Reason.UNAUTHORIZED, False, "token refused, still after a refresh"),
    "HTTP 403": Verdict(_F, Reason.UNAUTHORIZED, False, "permission denied"),
    "HTTP 404": Verdict(_F, Reason.NOT_FOUND, False, "no such report run"),
    "HTTP 429": Verdict(_F, Reason.RATE_LIMITED, True, "rate or concurrency limit; Retry-After"),
    "HTTP 5xx": Verdict(_F, Reason.UPSTREAM_ERROR, True, "server-side failure"),
    "HTTP other": Verdict(_F, Reason.BAD_UPSTREAM_RESPONSE, False, "an undocumented status"),
    "category 10": Verdict(_F, Reason.UNAUTHORIZED, False, "permission or access denied"),
    "category 11": Verdict(_F, Reason.UNAUTHORIZED, False, "authentication failed"),
    "category 20": Verdict(_F, Reason.INVALID_REQUEST, False, "invalid value"),
    "category 21": Verdict(_F, Reason.INVALID_REQUEST, False, "unknown field"),
    "category 22": Verdict(_F, Reason.INVALID_REQUEST, False, "missing field"),
    "category 23": Verdict(_F, Reason.INVALID_REQUEST, False, "missing query parameter"),
    "category 27": Verdict(_F, Reason.INVALID_REQUEST, False, "invalid query parameter"),
    "category 30": Verdict(
        _F, Reason.OPERATION_FAILED, False, "rule restriction (e.g. the run already finished)"
    ),
    "category 40": Verdict(_F, Reason.NOT_FOUND, False, "not found"),
    "category 45": Verdict(_F, Reason.NOT_SUPPORTED, False, "unsupported request"),
    "category 50": Verdict(_F, Reason.UPSTREAM_ERROR, True, "locking contention (retry)"),
    "category 60": Verdict(_F, Reason.UPSTREAM_ERROR, True, "internal error"),
    "category 61": Verdict(_F, Reason.UPSTREAM_ERROR, True, "temporary error (retry)"),
    "category 70": Verdict(_F, Reason.RATE_LIMITED, True, "request exceeded limit; Retry-After"),
    "category 90": Verdict(_F, Reason.INVALID_REQUEST, False, "malformed request"),
    "category 99": Verdict(_F, Reason.UPSTREAM_ERROR, False, "integration error (external system)"),
    OTHER_CATEGORY: Verdict(_F, Reason.UPSTREAM_ERROR, False, "a category no public source lists"),
    **COMMON_CODES,
}


@dataclass(frozen=True)
class OAuthClient:
    """OAuth 2.0 client credentials, for the REST hosts."""

    client_id: str
    client_secret: str
    refresh_margin: float


@dataclass(frozen=True)
class LegacyCredentials:
    """The zconnect hosts' credential headers, plus an optional entity header."""

    headers: dict[str, str]


@dataclass(frozen=True)
class ZuoraOptions:
    base_url: str
    api_prefix: str
    credentials: OAuthClient | LegacyCredentials
    entity_ids: str


_OAUTH_KEYS = ("client_id_env", "client_secret_env")
_LEGACY_KEYS = ("api_access_key_id_env", "api_secret_access_key_env")


def parse_options(table: Table) -> ZuoraOptions:
    if table.has("data_center") == table.has("base_url"):
        raise ConfigError(f"{table.key('data_center')}: give exactly one of data_center, base_url")
    family = _credential_family(table)
    if table.has("data_center"):
        base_url, accepted = table.choice("data_center", DATA_CENTERS)
        if family != accepted:
            keys = " and ".join(_OAUTH_KEYS if accepted == OAUTH else _LEGACY_KEYS)
            raise ConfigError(f"{table.key('data_center')}: this host takes {keys}")
    else:
        base_url = table.url("base_url")
    prefix = table.string("api_prefix", "/api/rest/v1").rstrip("/")
    if not prefix.startswith("/"):
        raise ConfigError(f"{table.key('api_prefix')}: must start with '/', got {prefix!r}")
    oauth = family == OAUTH
    return ZuoraOptions(
        base_url=base_url,
        api_prefix=prefix,
        credentials=_oauth(table) if oauth else _legacy(table),
        # Zuora-Entity-Ids belongs to the REST hosts; zconnect names one entity instead.
        entity_ids=_header_value(table, "entity_ids", table.string("entity_ids", ""))
        if oauth
        else "",
    )


def _header_value(table: Table, key: str, value: str) -> str:
    """A value sent in a header must be printable ASCII, or no request could carry it."""
    if not (value.isascii() and value.isprintable()):
        raise ConfigError(f"{table.key(key)}: must be printable ASCII (it is sent in a header)")
    return value


def _credential_family(table: Table) -> str:
    oauth, legacy = table.has("client_id_env"), table.has("api_access_key_id_env")
    if oauth == legacy:
        raise ConfigError(
            f"{table.key('client_id_env')}: give either client_id_env and client_secret_env "
            "(OAuth) or api_access_key_id_env and api_secret_access_key_env (zconnect hosts)"
        )
    return OAUTH if oauth else LEGACY


def _oauth(table: Table) -> OAuthClient:
    return OAuthClient(
        client_id=table.secret("client_id_env"),
        client_secret=table.secret("client_secret_env"),
        refresh_margin=table.seconds("token_refresh_margin_seconds", 60.0),
    )


def _legacy(table: Table) -> LegacyCredentials:
    headers = {
        name: _header_value(table, key, table.secret(key))
        for name, key in (
            ("apiAccessKeyId", "api_access_key_id_env"),
            ("apiSecretAccessKey", "api_secret_access_key_env"),
        )
    }
    entity_id = _header_value(table, "entity_id", table.string("entity_id", ""))
    entity_name = _header_value(table, "entity_name", table.string("entity_name", ""))
    if entity_id and entity_name:
        raise ConfigError(f"{table.key('entity_name')}: give entity_id or entity_name, not both")
    if entity_id:
        headers["entityId"] = entity_id
    if entity_name:
        headers["entityName"] = entity_name
    return LegacyCredentials(headers)


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float


def _signal(response: httpx2.Response, body: JsonValue) -> tuple[str, str, str]:
    """(table key, code shown to the caller, message) for a parsed answer."""
    reasons = body.get("reasons") if isinstance(body, dict) else None
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        code, message = _reason_code(reasons[0].get("code")), str(reasons[0].get("message") or "")
        shown = code or f"HTTP {response.status_code}"
        category = f"category {code[-2:]}"
        if code and category in CODES:
            return category, shown, message
        # An undocumented category says no more than the HTTP status does.
        if not response.is_success:
            return status_key(CODES, response.status_code), shown, message
        return OTHER_CATEGORY, shown, message
    if not response.is_success:
        return status_key(CODES, response.status_code), f"HTTP {response.status_code}", ""
    if not isinstance(body, dict) or body.get("success") is not True:
        return UNREADABLE, UNREADABLE, "no {success, response} envelope"
    text = str(body.get("response") or "")
    for key in (CANCELED_TEXT, ALREADY_CANCELED_TEXT):
        if key in text.lower():
            return key, "200", text
    return UNRECOGNIZED_SUCCESS, "200", text


# A 2xx saying one of these does not say the cancel was not applied.
_UNCLEAR_SUCCESS = frozenset({UNREADABLE, UNRECOGNIZED_SUCCESS})


def _reason_code(code: object) -> str:
    """A reason code as digits (6-digit resource + 2-digit category), or "" when it is none."""
    if isinstance(code, bool):
        return ""
    if isinstance(code, int) and code >= 0:
        return str(code)
    return code if isinstance(code, str) and code.isascii() and code.isdigit() else ""


def _reply(response: httpx2.Response) -> UpstreamReply:
    try:
        body = json_body(response)
    except UpstreamFailure:
        key = UNREADABLE if response.is_success else status_key(CODES, response.status_code)
        shown, body, message = f"HTTP {response.status_code}", raw_text(response), "not JSON"
    else:
        key, shown, message = _signal(response, body)
        body = redacted(body)
    unclear = response.is_success and key in _UNCLEAR_SUCCESS
    return failed_reply(
        CODES,
        (LEG,),
        key,
        message,
        body=body,
        shown_code=shown,
        retry_after=retry_after(response),
        delivery=Delivery.NO_ANSWER if unclear else Delivery.ANSWERED,
    )


_RUN_IN_PROGRESS = frozenset({"STARTED", "QUERYDATA", "PROCESSINGDATA"})
_RUN_CANCELLED = frozenset({"CANCELLED", "CANCELED"})  # the docs spell it CANCELLED
_RUN_ENDED = frozenset({"COMPLETED", "ERROR", "INVALID"})


def _run_check(response: httpx2.Response) -> LegCheck:
    """What `GET .../reportruns/{id}` says of a run."""
    body = json_body(response) if response.is_success else None
    key, _, _ = _signal(response, body) if body is not None else ("", "", "")
    if response.status_code == 404 or key == "category 40":
        return LegCheck(LEG, ConfirmState.REFUTED, "no such report run")
    if not response.is_success or not isinstance(body, dict) or body.get("success") is not True:
        raise UpstreamFailure(UNREADABLE, f"GetReportRun: HTTP {response.status_code}")
    run = body.get("response")
    status = str(run.get("status") if isinstance(run, dict) else "").upper()
    if status in _RUN_CANCELLED:
        return LegCheck(LEG, ConfirmState.CONFIRMED, f"status {status}")
    if status in _RUN_IN_PROGRESS:
        return LegCheck(LEG, ConfirmState.ACTIVE, f"status {status}")
    if status in _RUN_ENDED:
        return LegCheck(LEG, ConfirmState.REFUTED, f"report run ended as {status}")
    return LegCheck(LEG, ConfirmState.PENDING, f"status {status or 'missing'}")


class ZuoraAdapter:
    def __init__(
        self, connection: ConnectionSettings, transport: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        self._options: ZuoraOptions = connection.options
        self._client = http_client(connection, self._options.base_url, transport)
        self._requests = Requests(self._client)
        self._logins = login_client(connection, self._options.base_url, transport)
        credentials = self._options.credentials
        self._legacy_headers = (
            credentials.headers if isinstance(credentials, LegacyCredentials) else {}
        )
        self._tokens = (
            SharedLogin(
                lambda timeout: self._fetch_token(credentials, timeout),
                lambda token: time.monotonic() < token.refresh_at,
            )
            if isinstance(credentials, OAuthClient)
            else None
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._logins.aclose()

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        path = self._run_path(job)
        exchange = Exchange()

        async def cancel_once() -> UpstreamReply:
            response = await self._authorized("DELETE", path, job.operation, timeout, exchange)
            return _reply(response)

        return await answered(
            cancel_once(),
            timeout=timeout,
            refused_code="HTTP 401",
            on_failure=lambda failure: failed_reply(
                CODES,
                (LEG,),
                failure.code,
                failure.message,
                retry_after=failure.retry_after,
                delivery=exchange.delivery,
            ),
        )

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        """Reads the run: its status says whether the cancel landed."""
        path = self._run_path(job)

        async def read() -> tuple[LegCheck, ...]:
            return (_run_check(await self._authorized("GET", path, "GetReportRun", timeout)),)

        return await answered(
            read(),
            timeout=timeout,
            refused_code="HTTP 401",
            on_failure=lambda failure: (
                LegCheck(LEG, ConfirmState.PENDING, f"read failed: {failure.message}"),
            ),
        )

    def _run_path(self, job: JobKind) -> str:
        if not isinstance(job, ZuoraReportRun):
            raise TypeError(f"Zuora does not cancel {type(job).__name__}")
        return f"{self._options.api_prefix}/reportruns/{job.report_run_id}"

    async def _authorized(
        self,
        method: str,
        path: str,
        operation: str,
        timeout: float,
        exchange: Exchange | None = None,
    ) -> httpx2.Response:
        """One call with the connection's credentials; an OAuth token is refreshed once on 401."""

        async def send_with(auth: dict[str, str]) -> httpx2.Response:
            headers = dict(auth)
            if self._options.entity_ids:
                headers["Zuora-Entity-Ids"] = self._options.entity_ids
            request = self._requests.bare(method, path, headers=headers, operation=operation)
            return await send(self._client, request, timeout, exchange)

        if self._tokens is None:
            return await send_with(self._legacy_headers)
        return await self._tokens.call(
            timeout,
            lambda token: send_with({"Authorization": f"Bearer {token.value}"}),
            lambda answer: answer.status_code == 401,
        )

    async def _fetch_token(self, client: OAuthClient, timeout: float) -> _Token:
        form = {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "grant_type": "client_credentials",
        }
        request = self._logins.build_request(
            "POST", "/oauth/token", data=form, extensions={OPERATION: "OAuthToken"}
        )
        response = await send(self._logins, request, timeout)
        if response.status_code in (400, 401, 403):
            raise AuthRefused(f"oauth/token: {_token_error(response)}")
        if not response.is_success:
            key = status_key(CODES, response.status_code)
            raise UpstreamFailure(
                key, f"oauth/token: {_token_error(response)}", retry_after(response)
            )
        body = json_body(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise UpstreamFailure(UNREADABLE, "oauth/token: no access_token/expires_in")
        SECRETS.issued(token)  # from now on scrubbed, even if unusable
        if not (token.isascii() and token.isprintable()):  # it goes into a header
            raise UpstreamFailure(UNREADABLE, "oauth/token: the access token is unusable")
        refresh_in = max(0.0, float(lifetime) - client.refresh_margin)
        return _Token(token, time.monotonic() + refresh_in)


def _token_error(response: httpx2.Response) -> str:
    try:
        body: Any = response.json()
        return str(body["reasons"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {response.status_code}"


UPSTREAM = Upstream(
    name="zuora",
    jobs=(ZuoraReportRun,),
    codes=CODES,
    parse_options=parse_options,
    connect=ZuoraAdapter,
    sandbox="simulators.zuora:SANDBOX",
)
