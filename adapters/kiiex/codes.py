"""KIIEX's one code table: the generic envelope's `errorcode`, then the HTTP status.

Codes and their meanings: docs/UPSTREAMS.md, "KIIEX". A code no public source lists falls back
to the HTTP status of the answer it came in (`adapter._says_more_than`), never to a guess.
"""

from __future__ import annotations

from adapters.http import COMMON_CODES, SECRET_FIELDS
from gateway.model import Outcome, Reason, Verdict
from gateway.upstream import CodeTable

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
# Codes a public source lists as errors: on a non-2xx answer only these say more than the status.
DOCUMENTED_ERRORS = frozenset(code for code in CODES if code.isdigit() and code != "0")

SECRETS_IN_BODIES = SECRET_FIELDS | {"sessiontoken", "aptoken", "twofatoken"}
"""Body fields whose values are credentials (AuthenticateUser's request and answer, the
session header): redacted from every body the gateway passes on (`Upstream.secret_fields`)."""
