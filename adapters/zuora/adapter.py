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

from adapters.http import (
    MISCONFIGURED,
    OPERATION,
    UNREADABLE,
    AuthRefused,
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
from adapters.zuora.codes import (
    ALREADY_CANCELED_TEXT,
    CANCELED_TEXT,
    CODES,
    OTHER_CATEGORY,
    SECRETS_IN_BODIES,
    UNRECOGNIZED_SUCCESS,
)
from adapters.zuora.jobs import ZuoraReportRun
from adapters.zuora.options import LegacyCredentials, OAuthClient, ZuoraOptions
from gateway.connection import ConnectionSettings
from gateway.errors import JobKindNotImplemented
from gateway.jobs import JobKind
from gateway.model import Delivery, JsonValue, UpstreamReply
from gateway.secrets import SECRETS
from gateway.upstream import ConfirmState, LegCheck, Preflight

LEG = "report_run"
_redacted = Redactor(SECRETS_IN_BODIES)


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
        shown, body, message = (
            f"HTTP {response.status_code}",
            _redacted.raw_text(response),
            "not JSON",
        )
    else:
        key, shown, message = _signal(response, body)
        body = _redacted(body)
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

    async def preflight(self, *, timeout: float) -> Preflight:
        """A fresh OAuth token, as the first call would fetch; the zconnect hosts' headers
        need no login (a cancel is what shows whether they are taken)."""
        credentials = self._options.credentials
        if not isinstance(credentials, OAuthClient):
            return Preflight(True, "credential headers: no login to make")

        async def token() -> Preflight:
            await self._fetch_token(credentials, timeout)
            return Preflight(True, "oauth/token issued a token")

        return await answered(
            token(),
            timeout=timeout,
            refused_code="HTTP 401",
            on_failure=lambda failure: Preflight(False, f"oauth/token: {failure.message}"),
        )

    def _run_path(self, job: JobKind) -> str:
        if not isinstance(job, ZuoraReportRun):  # the one job kind Zuora serves
            raise JobKindNotImplemented(f"Zuora serves no {type(job).__name__}")
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
        if response.status_code == 404:  # no token endpoint there: the wrong host
            raise UpstreamFailure(
                MISCONFIGURED, "oauth/token answered HTTP 404: check base_url or data_center"
            )
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
