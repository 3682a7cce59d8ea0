"""Scrubbing by value: every form a secret may take in echoed text, overlapping secrets,
short ones, and the cut that must not leave half a secret behind."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from adapters.http import Redactor
from gateway.secrets import REDACTED, SECRETS, SecretBook

SECRET = "s3cr3t/+=Zz Pass"


@pytest.fixture
def book() -> SecretBook:
    made = SecretBook()
    made.configured({SECRET})
    return made


@pytest.mark.parametrize(
    "form",
    [SECRET, quote_plus(SECRET), "s3cr3t%2F%2B%3DZz%20Pass", json.dumps(SECRET)[1:-1]],
    ids=["plain", "form-encoded", "url-encoded", "json-escaped"],
)
def test_every_form_of_a_secret_is_scrubbed(book: SecretBook, form: str) -> None:
    assert (
        book.scrub(f"client_secret={form}&grant_type=x") == f"client_secret={REDACTED}&grant_type=x"
    )


def test_overlapping_secrets_are_cut_out_whole() -> None:
    book = SecretBook()
    book.configured({"abcdXYZ1", "XYZ1efgh"})
    assert book.scrub("..abcdXYZ1efgh..") == f"..{REDACTED}.."


def test_issued_tokens_are_scrubbed_and_the_newest_kept() -> None:
    book = SecretBook()
    tokens = [f"token-{i:04d}" for i in range(40)]
    for token in tokens:
        book.issued(token)
    assert book.scrub(tokens[-1]) == REDACTED
    assert book.scrub(tokens[-2]) == REDACTED, "the one before a refresh too"
    assert book.scrub(tokens[0]) == tokens[0], "the book is bounded"


def test_values_too_short_to_be_secrets_are_not_scrubbed() -> None:
    book = SecretBook()
    book.configured({"abc"})
    assert book.scrub("abc abc") == "abc abc"


def test_text_is_scrubbed_before_it_is_cut() -> None:
    secret = "Zq9-very-long-secret-value"
    SECRETS.configured({secret})
    text = "x" * 2040 + secret
    assert secret[:10] not in str(Redactor(())({"page": text}))
