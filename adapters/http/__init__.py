"""The shared HTTP edge every upstream package builds on; it names no upstream.

    _engine    one httpx2 client per connection (and one for its logins), answers bounded
    _send      `send`: transport failures as table keys (unreachable or misconfigured)
    _delivery  what a cancel's request became: NOT_SENT until it has a connection
    _bodies    parsing an answer once, redaction, Retry-After
    _codes     the code-table rows every upstream shares, and the lookups through a table
    _guard     `answered`: the one guard every adapter call runs in
    _sessions  `SharedLogin`: one login shared by every call of a connection

Failures inside an adapter call, as the guard catches them:

    Exception
    ├── UpstreamFailure   no usable answer: `code` is a row of the adapter's table
    │   (httpx2.DecodingError: UnreadableBody, an answer the gateway will not read)
    └── AuthRefused       the upstream refused the gateway's credentials
"""

from adapters.http._bodies import SECRET_FIELDS, Decoded, Redactor, json_body, retry_after
from adapters.http._codes import (
    COMMON_CODES,
    MISCONFIGURED,
    TIMEOUT,
    UNREACHABLE,
    UNREADABLE,
    failed_reply,
    status_key,
)
from adapters.http._delivery import Exchange
from adapters.http._engine import (
    MAX_RESPONSE_BYTES,
    OPERATION,
    Requests,
    UnreadableBody,
    engine_client,
    http_client,
    login_client,
)
from adapters.http._guard import AuthRefused, UpstreamFailure, answered
from adapters.http._send import operation_of, send
from adapters.http._sessions import SharedLogin

__all__ = [
    "COMMON_CODES",
    "MAX_RESPONSE_BYTES",
    "MISCONFIGURED",
    "OPERATION",
    "SECRET_FIELDS",
    "TIMEOUT",
    "UNREACHABLE",
    "UNREADABLE",
    "AuthRefused",
    "Decoded",
    "Exchange",
    "Redactor",
    "Requests",
    "SharedLogin",
    "UnreadableBody",
    "UpstreamFailure",
    "answered",
    "engine_client",
    "failed_reply",
    "http_client",
    "json_body",
    "login_client",
    "operation_of",
    "retry_after",
    "send",
    "status_key",
]
