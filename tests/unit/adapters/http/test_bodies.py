"""What reaches a caller of an upstream's body: credentials redacted by field and scrubbed by
value, sizes bounded, numbers kept writable, Retry-After read."""

from __future__ import annotations

import httpx2
import pytest

from adapters.http import (
    SECRET_FIELDS,
    UNREADABLE,
    Redactor,
    UpstreamFailure,
    json_body,
    retry_after,
)
from gateway.secrets import SECRETS

REDACT = Redactor({"SessionToken"})


def test_the_upstreams_own_fields_and_the_common_ones_are_redacted_in_any_case() -> None:
    redact = Redactor(SECRET_FIELDS | {"sessiontoken"})
    body = {"SESSIONTOKEN": "t", "Authorization": "Bearer x", "nested": [{"access_token": "y"}]}
    assert redact(body) == {
        "SESSIONTOKEN": "[redacted]", "Authorization": "[redacted]",
        "nested": [{"access_token": "[redacted]"}],
    }  # fmt: skip


def test_a_redactor_names_only_what_it_is_given() -> None:
    assert Redactor(())({"SessionToken": "t"}) == {"SessionToken": "t"}


def test_known_secrets_are_scrubbed_by_value_in_keys_and_text() -> None:
    secret = "a-secret-the-process-issued-42"
    SECRETS.issued(secret)
    assert secret not in str(REDACT({secret: f"echo {secret}"}))


def test_sizes_are_bounded() -> None:
    deep: object = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    assert "nested too deep" in str(REDACT(deep))
    assert len(REDACT(list(range(1000)))) == 100  # type: ignore[arg-type]
    text = REDACT("x" * 10_000)
    assert isinstance(text, str)
    assert len(text) == 2049
    assert text.endswith("…")


def _response(content: bytes, **headers: str) -> httpx2.Response:
    return httpx2.Response(200, content=content, headers=headers)


def test_json_keeps_what_json_cannot_write_again_as_text() -> None:
    body = json_body(_response(b'{"a": NaN, "b": 1e400, "c": 1.5, "d": 7}'))
    assert body == {"a": "NaN", "b": "1e400", "c": 1.5, "d": 7}


def test_a_body_that_is_no_json_is_unreadable() -> None:
    with pytest.raises(UpstreamFailure) as failure:
        json_body(_response(b"<html>"))
    assert failure.value.code == UNREADABLE


@pytest.mark.parametrize(
    ("header", "seconds"), [("3", 3.0), ("0.5", 0.5), ("-1", None), ("Wed, 21 Oct 2015", None)]
)
def test_retry_after_in_seconds_only(header: str, seconds: float | None) -> None:
    assert retry_after(_response(b"", **{"retry-after": header})) == seconds
