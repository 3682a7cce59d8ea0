"""What an adapter does with an answer's body: parse it once (`Decoded`, `json_body`), and
keep what reaches a caller bounded and free of secrets (`Redactor`), with the pause the
upstream asked for (`retry_after`)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx2

from adapters.http._codes import UNREADABLE
from adapters.http._guard import UpstreamFailure
from gateway.model import JsonValue
from gateway.secrets import SECRETS

SECRET_FIELDS = frozenset(
    {"authorization", "password", "token", "access_token", "refresh_token", "client_secret",
     "secret", "signature", "apikey", "api_key"}
)  # fmt: skip
"""Field names that carry credentials in any HTTP API (the Authorization header, RFC 6749's
OAuth names, the common key and signature names): each upstream adds its own."""
_MAX_TEXT = 2048
# Deeper or longer than this is not worth showing a caller, and protobuf parsers refuse
# messages nested past 100 levels: cut before that.
_MAX_DEPTH = 16
_MAX_ITEMS = 100


def _number(text: str) -> float | str:
    """A JSON number as a float, or as its text when no float holds it (`1e400`)."""
    value = float(text)
    return value if math.isfinite(value) else text


def json_body(response: httpx2.Response) -> JsonValue:
    """The parsed body, or UpstreamFailure(UNREADABLE) when it is not JSON. `NaN` and
    `Infinity` (which Python's parser takes, and JSON has not) and numbers too large for a
    float stay text: a non-finite number could not be written out again as JSON (grpcurl's
    and `--json`'s view of the envelope)."""
    try:
        body: JsonValue = response.json(parse_constant=str, parse_float=_number)
    except (ValueError, RecursionError) as error:  # not JSON, bad UTF-8, nested past reason
        raise UpstreamFailure(
            UNREADABLE, f"HTTP {response.status_code}: body is not JSON"
        ) from error
    return body


@dataclass(frozen=True)
class Decoded:
    """An HTTP answer with its JSON body decoded once, for every reader that needs it."""

    response: httpx2.Response
    body: JsonValue = None
    failure: UpstreamFailure | None = None
    """Set when the body is not JSON; `json()` raises it."""

    @classmethod
    def of(cls, response: httpx2.Response) -> Decoded:
        try:
            return cls(response, json_body(response))
        except UpstreamFailure as failure:
            return cls(response, failure=failure)

    def json(self) -> JsonValue:
        """The body, or UpstreamFailure(UNREADABLE) when it is not JSON."""
        if self.failure is not None:
            raise self.failure
        return self.body


class Redactor:
    """Makes upstream bodies safe to return and log: the values of `secret_fields` (matched
    without case) replaced, every configured secret and issued token scrubbed by value, and
    cut to a size a caller can use (depth, items and text bounded). Each upstream names its
    own credential fields; the shared code names none."""

    def __init__(self, secret_fields: Collection[str]) -> None:
        self._secret_fields = frozenset(name.lower() for name in secret_fields)

    def __call__(self, value: Any, depth: int = 0) -> JsonValue:
        if depth >= _MAX_DEPTH and isinstance(value, dict | list):
            return "[truncated: nested too deep]"
        if isinstance(value, dict):
            return {
                SECRETS.scrub(str(k)): (
                    "[redacted]" if str(k).lower() in self._secret_fields else self(v, depth + 1)
                )
                for k, v in list(value.items())[:_MAX_ITEMS]
            }
        if isinstance(value, list):
            return [self(v, depth + 1) for v in value[:_MAX_ITEMS]]
        if isinstance(value, str):  # scrubbed whole, then cut: never half a secret
            text = SECRETS.scrub(value)
            return text[:_MAX_TEXT] + "…" if len(text) > _MAX_TEXT else text
        return value  # type: ignore[no-any-return]

    def raw_text(self, response: httpx2.Response) -> JsonValue:
        """A non-JSON body, kept short, for `upstream_response`."""
        return {"status": response.status_code, "text": SECRETS.scrub(response.text)[:_MAX_TEXT]}


def retry_after(response: httpx2.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare for APIs and is ignored."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
