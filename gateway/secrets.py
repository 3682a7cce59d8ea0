"""Scrubbing by value: every secret the process knows is replaced wherever upstream text
could carry it (envelopes, log lines, tracebacks), whatever key or shape it hides under.

Redaction by JSON key (`adapters.http.redacted`) misses an upstream that echoes a token in
an error text or a proxy page that quotes the request headers; this catches those. The
book is one per process, like logging: configured secrets are added at start, session and
OAuth tokens as they are issued (the newest few are kept, so the token before a refresh,
quoted in a late answer, is still caught).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from gateway.model import CancelResult, LegResult

REDACTED = "[redacted]"
# Shorter values would scrub ordinary words; nothing that short is a secret worth the name.
_SHORTEST = 4
_TOKENS_KEPT = 32  # a current and a previous token for each of many connections


class SecretBook:
    def __init__(self) -> None:
        self._configured: set[str] = set()
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None
        self._values: tuple[str, ...] = ()

    def configured(self, values: set[str] | frozenset[str]) -> None:
        self._configured |= {v for v in values if len(v) >= _SHORTEST}
        self._pattern = None

    def issued(self, token: str) -> None:
        """A session or OAuth token the gateway just received."""
        if len(token) < _SHORTEST or token in self._tokens:
            return
        self._tokens[token] = None
        while len(self._tokens) > _TOKENS_KEPT:
            self._tokens.popitem(last=False)
        self._pattern = None

    def scrub(self, text: str) -> str:
        pattern = self._compiled()
        if pattern is None or not any(value in text for value in self._values):
            return text  # the common case, found by plain substring search
        return pattern.sub(REDACTED, text)

    def scrub_json(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        return value

    def _compiled(self) -> re.Pattern[str] | None:
        if self._pattern is None:
            self._values = tuple(
                sorted(self._configured | set(self._tokens), key=len, reverse=True)
            )
            if not self._values:
                return None
            self._pattern = re.compile("|".join(re.escape(v) for v in self._values))
        return self._pattern


SECRETS = SecretBook()
"""The process's book: what the gateways in this process know."""


def scrubbed(result: CancelResult, book: SecretBook = SECRETS) -> CancelResult:
    """The envelope with every secret gone from the text an upstream may have put in it."""
    return replace(
        result,
        message=book.scrub(result.message),
        legs=tuple(_leg(leg, book) for leg in result.legs),
        upstream_response=book.scrub_json(result.upstream_response),
        history=tuple(
            replace(a, legs=tuple(_leg(leg, book) for leg in a.legs)) for a in result.history
        ),
    )


def _leg(leg: LegResult, book: SecretBook) -> LegResult:
    return replace(
        leg,
        upstream_code=book.scrub(leg.upstream_code),
        upstream_message=book.scrub(leg.upstream_message),
        detail=book.scrub(leg.detail),
    )
