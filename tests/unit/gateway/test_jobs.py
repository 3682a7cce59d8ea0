"""Violations name proto fields, rooted at the oneof member."""

from __future__ import annotations

from gateway.errors import FieldViolation, InvalidArgument


def test_invalid_argument_under_prefixes_field_paths() -> None:
    error = InvalidArgument(
        [FieldViolation("oms_id", "bad"), FieldViolation("ask_quote_id", "worse")]
    )
    rooted = error.under("kiiex_quote")
    assert rooted.violations == (
        FieldViolation("kiiex_quote.oms_id", "bad"),
        FieldViolation("kiiex_quote.ask_quote_id", "worse"),
    )
    assert rooted.metadata["fields"] == "kiiex_quote.oms_id,kiiex_quote.ask_quote_id"
    assert rooted.message == "kiiex_quote.oms_id: bad; kiiex_quote.ask_quote_id: worse"
    assert error.violations[0].field == "oms_id"  # the original is untouched
