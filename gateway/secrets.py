"""Scrubbing by value: every secret the process knows is replaced wherever upstream text
could carry it (envelopes, log lines, tracebacks), whatever key or shape it hides under.

Redaction by JSON key (`adapters.http.redacted`) misses an upstream that echoes a token in
an error text or a proxy page that quotes the request headers; this catches those. The
book is one per process, like logging: configured secrets are added at start, session and
OAuth tokens as they are issued (the newest few are kept, so the token before a refresh,
quoted in a late answer, is still caught).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.model import Attempt, CancelResult, LegResult

REDACTED = "[redacted]"
# Shorter values would scrub ordinary words; nothing that short is a secret worth the name
# (the composition root warns about configured ones).
SHORTEST = 4
_TOKENS_KEPT = 32  # a current and a previous token for each of many connections


def _forms(value: str) -> set[str]:
    """A secret as it may appear in echoed text: as is, form- or URL-encoded (a login body,
    a query), JSON-escaped (a body quoted inside another)."""
    return {value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1]}


class SecretBook:
    def __init__(self) -> None:
        self._configured: set[str] = set()
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._values: tuple[str, ...] | None = ()
        self._pattern: re.Pattern[str] | None = None

    def configured(self, values: set[str] | frozenset[str]) -> None:
        self._configured |= {f for v in values if len(v) >= SHORTEST for f in _forms(v)}
        self._values = None

    def issued(self, token: str) -> None:
        """A session or OAuth token the gateway just received."""
        if len(token) < SHORTEST or token in self._tokens:
            return
        self._tokens[token] = None
        while len(self._tokens) > _TOKENS_KEPT:
            self._tokens.popitem(last=False)
        self._values = None

    def scrub(self, text: str) -> str:
        """`text` with every span any secret covers replaced; overlapping secrets are
        cut out whole, not one leaving a piece of the other."""
        values = self._known()
        if not text or self._pattern is None or self._pattern.search(text) is None:
            return text  # the common case: one search in C for all the secrets
        spans = sorted(
            (start, start + len(value)) for value in values for start in _occurrences(text, value)
        )
        out, at = [], 0
        for start, end in spans:
            if end <= at:
                continue
            if start > at:
                out += [text[at:start], REDACTED]
            elif not out:
                out.append(REDACTED)
            at = max(at, end)
        return "".join([*out, text[at:]])

    def scrub_json(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) scrubbed; the same object
        when nothing in it had to go."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            pairs = [(self.scrub(str(k)), self.scrub_json(v)) for k, v in value.items()]
            same = zip(pairs, value.items(), strict=True)
            return value if all(a is k and b is v for (a, b), (k, v) in same) else dict(pairs)
        if isinstance(value, list):
            items = [self.scrub_json(v) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value

    def _known(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._configured | set(self._tokens))
            alternatives = "|".join(map(re.escape, self._values))
            self._pattern = re.compile(alternatives) if self._values else None
        return self._values


def _occurrences(text: str, value: str) -> list[int]:
    found, start = [], text.find(value)
    while start != -1:
        found.append(start)
        start = text.find(value, start + 1)
    return found


SECRETS = SecretBook()
"""The process's book: what the gateways in this process know."""


def scrubbed(result: CancelResult, book: SecretBook = SECRETS) -> CancelResult:
    """The envelope with every secret gone from the text an upstream may have put in it
    (the same object when there was none: the common case costs no copy)."""
    message = book.scrub(result.message)
    legs = scrubbed_legs(result.legs, book)
    body = book.scrub_json(result.upstream_response)
    history = tuple(_attempt(a, book) for a in result.history)
    unchanged = message is result.message and legs is result.legs
    unchanged = unchanged and body is result.upstream_response
    if unchanged and all(a is b for a, b in zip(history, result.history, strict=True)):
        return result
    return replace(result, message=message, legs=legs, upstream_response=body, history=history)


def scrubbed_legs(legs: tuple[LegResult, ...], book: SecretBook = SECRETS) -> tuple[LegResult, ...]:
    """The legs with no secret in their text; the same tuple when none had one."""
    cleaned = tuple(_leg(leg, book) for leg in legs)
    return legs if all(a is b for a, b in zip(cleaned, legs, strict=True)) else cleaned


def _attempt(attempt: Attempt, book: SecretBook) -> Attempt:
    legs = scrubbed_legs(attempt.legs, book)
    return attempt if legs is attempt.legs else replace(attempt, legs=legs)


def _leg(leg: LegResult, book: SecretBook) -> LegResult:
    code = book.scrub(leg.upstream_code)
    message = book.scrub(leg.upstream_message)
    detail = book.scrub(leg.detail)
    if code is leg.upstream_code and message is leg.upstream_message and detail is leg.detail:
        return leg
    return replace(leg, upstream_code=code, upstream_message=message, detail=detail)
