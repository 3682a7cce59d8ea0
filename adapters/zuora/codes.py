"""Zuora's one code table: the success text, a documented `reasons[].code` category, then
the HTTP status. Codes and meanings: docs/UPSTREAMS.md, "Zuora"."""

from __future__ import annotations

from adapters.http import COMMON_CODES, SECRET_FIELDS
from gateway.model import Outcome, Reason, Verdict
from gateway.upstream import CodeTable

CANCELED_TEXT = "has been canceled"
ALREADY_CANCELED_TEXT = "was canceled"
UNRECOGNIZED_SUCCESS = "success: other text"
OTHER_CATEGORY = "category other"

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


SECRETS_IN_BODIES = SECRET_FIELDS | {"apiaccesskeyid", "apisecretaccesskey"}
"""Body fields whose values are credentials (the OAuth form and answer, the zconnect
hosts' credential headers): redacted from every body the gateway passes on
(`Upstream.secret_fields`)."""
