"""Zuora Reporting API: `DELETE {base}{api_prefix}/reportruns/{id}` with an OAuth bearer token.

A 200 can still be a failure (`success: false`), so the body decides before the status
does: `reasons[].code` (6-digit resource + 2-digit category) maps by its category, then the
HTTP status, then the success text. Facts and assumptions: shared/upstreams.md, part 2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from adapters.base import (
    COMMON_CODES,
    OPERATION,
    UNREADABLE,
    AuthRefused,
    CodeTable,
    LegCheck,
    Upstream,
    UpstreamFailure,
    answer_within,
    failed_reply,
    http_client,
    json_body,
    raw_text,
    redacted,
    retry_after,
    send,
    status_key,
)
from adapters.sessions import SharedLogin
from gateway.config import ConfigError, ConnectionSettings, Table
from gateway.jobs import Job, ZuoraReportRun
from gateway.model import JsonValue, Outcome, Reason, UpstreamReply, Verdict

LEG = "report_run"
CANCELED_TEXT = "has been canceled"
ALREADY_CANCELED_TEXT = "was canceled"
UNRECOGNIZED_SUCCESS = "success: other text"
OTHER_CATEGORY = "category other"

# The REST hosts of the fact sheet's data-center table (OAuth works only on these).
DATA_CENTERS = {
    "us-production": "https://rest.zuora.com",
    "us-sandbox": "https://rest.apisandbox.zuora.com",
    "us-cloud-production": "https://rest.na.zuora.com",
    "us-cloud-sandbox": "https://rest.sandbox.na.zuora.com",
    "us-central-sandbox": "https://rest.test.zuora.com",
    "eu-production": "https://rest.eu.zuora.com",
    "eu-sandbox": "https://rest.sandbox.eu.zuora.com",
    "eu-central-sandbox": "https://rest.test.eu.zuora.com",
    "apac-production": "https://rest.ap.zuora.com",
    "apac-sandbox": "https://rest.test.ap.zuora.com",
}

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
class ZuoraOptions:
    base_url: str
    api_prefix: str
    client_id: str
    client_secret: str
    token_refresh_margin: float
    entity_ids: str


def parse_options(table: Table) -> ZuoraOptions:
    if table.has("data_center") == table.has("base_url"):
        raise ConfigError(f"{table.key('data_center')}: give exactly one of data_center, base_url")
    if table.has("data_center"):
        base_url = table.choice("data_center", DATA_CENTERS)
    else:
        base_url = table.url("base_url")
    prefix = table.string("api_prefix", "/api/rest/v1").rstrip("/")
    if not prefix.startswith("/"):
        raise ConfigError(f"{table.key('api_prefix')}: must start with '/', got {prefix!r}")
    return ZuoraOptions(
        base_url=base_url,
        api_prefix=prefix,
        client_id=table.secret("client_id_env"),
        client_secret=table.secret("client_secret_env"),
        token_refresh_margin=table.seconds("token_refresh_margin_seconds", 60.0),
        entity_ids=table.string("entity_ids", ""),
    )


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float


def _signal(response: httpx.Response, body: JsonValue) -> tuple[str, str, str]:
    """(table key, code shown to the caller, message) for a parsed answer."""
    reasons = body.get("reasons") if isinstance(body, dict) else None
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        code, message = reasons[0].get("code"), str(reasons[0].get("message") or "")
        category = f"category {str(code)[-2:]}" if isinstance(code, int | str) else OTHER_CATEGORY
        key = category if category in CODES else OTHER_CATEGORY
        return key, str(code), message
    if not response.is_success:
        return status_key(CODES, response.status_code), f"HTTP {response.status_code}", ""
    if not isinstance(body, dict) or body.get("success") is not True:
        return UNREADABLE, UNREADABLE, "no {success, response} envelope"
    text = str(body.get("response") or "")
    for key in (CANCELED_TEXT, ALREADY_CANCELED_TEXT):
        if key in text.lower():
            return key, "200", text
    return UNRECOGNIZED_SUCCESS, "200", text


def _reply(response: httpx.Response) -> UpstreamReply:
    try:
        body = json_body(response)
    except UpstreamFailure:
        key = UNREADABLE if response.is_success else status_key(CODES, response.status_code)
        shown, body, message = f"HTTP {response.status_code}", raw_text(response), "not JSON"
    else:
        key, shown, message = _signal(response, body)
        body = redacted(body)
    return failed_reply(CODES, (LEG,), key, message, body, shown, retry_after(response))


class ZuoraAdapter:
    upstream: ClassVar[str] = "zuora"
    jobs: ClassVar[tuple[type, ...]] = (ZuoraReportRun,)

    def __init__(
        self, connection: ConnectionSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._options: ZuoraOptions = connection.options
        self._client = http_client(connection, self._options.base_url, transport)
        self._tokens = SharedLogin(self._fetch_token, lambda t: time.monotonic() < t.refresh_at)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def cancel(self, job: Job, timeout: float) -> UpstreamReply:
        if not isinstance(job, ZuoraReportRun):
            raise TypeError(f"Zuora does not cancel {type(job).__name__}")
        path = f"{self._options.api_prefix}/reportruns/{job.report_run_id}"

        async def cancel_once() -> UpstreamReply:
            return _reply(await self._authorized("DELETE", path, job.operation, timeout))

        return await answer_within(CODES, (LEG,), "HTTP 401", timeout, cancel_once())

    async def confirm(self, job: Job, timeout: float) -> tuple[LegCheck, ...]:
        # A Zuora cancel answers CANCELED itself; the core confirms only ACCEPTED legs.
        return ()

    async def _authorized(
        self, method: str, path: str, operation: str, timeout: float
    ) -> httpx.Response:
        """One call with the shared token, refreshing it once on 401."""

        async def send_with(token: _Token) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token.value}"}
            if self._options.entity_ids:
                headers["Zuora-Entity-Ids"] = self._options.entity_ids
            request = self._client.build_request(
                method, path, headers=headers, extensions={OPERATION: operation}
            )
            return await send(self._client, request, timeout)

        return await self._tokens.call(timeout, send_with, lambda answer: answer.status_code == 401)

    async def _fetch_token(self, timeout: float) -> _Token:
        form = {
            "client_id": self._options.client_id,
            "client_secret": self._options.client_secret,
            "grant_type": "client_credentials",
        }
        request = self._client.build_request(
            "POST", "/oauth/token", data=form, extensions={OPERATION: "OAuthToken"}
        )
        response = await send(self._client, request, timeout)
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
        if not (token.isascii() and token.isprintable()):  # it goes into a header
            raise UpstreamFailure(UNREADABLE, "oauth/token: the access token is unusable")
        refresh_in = max(0.0, float(lifetime) - self._options.token_refresh_margin)
        return _Token(token, time.monotonic() + refresh_in)


def _token_error(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        return str(body["reasons"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {response.status_code}"


UPSTREAM = Upstream("zuora", parse_options, ZuoraAdapter, ZuoraAdapter.jobs, CODES)
