"""Its one code table."""

from __future__ import annotations

from adapters.http import COMMON_CODES
from gateway.model import Outcome, Reason, Verdict
from gateway.upstream import CodeTable

CODES: CodeTable = {
    "closed": Verdict(Outcome.CANCELED, Reason.UNSPECIFIED, False, "the ticket is closed"),
    "HTTP 404": Verdict(Outcome.FAILED, Reason.NOT_FOUND, False, "no such ticket"),
    "HTTP 5xx": Verdict(Outcome.FAILED, Reason.UPSTREAM_ERROR, True, "server-side failure"),
    "HTTP other": Verdict(Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False, "undocumented"),
    **COMMON_CODES,
}
