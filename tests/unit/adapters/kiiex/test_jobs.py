"""KIIEX's job kinds validate themselves: a job that exists is valid, violations name proto
fields."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.kiiex import KiiexQuote, KiiexUserReport
from gateway.errors import InvalidArgument

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def _violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_user_report_accepts_a_canonical_guid() -> None:
    assert KiiexUserReport(GUID).user_report_id == GUID


def test_user_report_normalizes_to_lower_case() -> None:
    assert KiiexUserReport(GUID.upper()).user_report_id == GUID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-guid",
        "3f2504e04f8911d39a0c0305e82c3301",
        "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
        "urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301\n",
        "3f2504e0-4f89-11d3-9a0c-0305e82c330g",
        GUID + "0",
        GUID * 3,
    ],
)
def test_user_report_rejects_anything_but_a_guid(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        KiiexUserReport(bad)
    assert list(_violations(caught)) == ["user_report_id"]
    assert repr(bad[:64]) in caught.value.violations[0].description


def test_user_report_shows_at_most_64_characters_of_the_bad_value() -> None:
    bad = "a" * 60 + "b" * 40
    with pytest.raises(InvalidArgument) as caught:
        KiiexUserReport(bad)
    description = caught.value.violations[0].description
    assert repr("a" * 60 + "bbbb") in description
    assert "bbbbb" not in description


def _is_guid_shaped(value: str) -> bool:
    return len(value) == 36 and all(
        char == "-" if index in (8, 13, 18, 23) else char in string.hexdigits
        for index, char in enumerate(value)
    )


def _near_guid() -> st.SearchStrategy[str]:
    """A valid GUID with one character replaced, inserted or removed."""
    position = st.integers(min_value=0, max_value=len(GUID) - 1)
    char = st.characters()
    return st.one_of(
        st.builds(lambda i, c: GUID[:i] + c + GUID[i + 1 :], position, char),
        st.builds(lambda i, c: GUID[:i] + c + GUID[i:], position, char),
        st.builds(lambda i: GUID[:i] + GUID[i + 1 :], position),
    )


@given(st.one_of(st.text(), _near_guid()).filter(lambda s: not _is_guid_shaped(s)))
def test_user_report_rejects_every_non_guid_with_invalid_argument_only(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        KiiexUserReport(value)
    assert [v.field for v in caught.value.violations] == ["user_report_id"]


def test_quote_accepts_positive_ids() -> None:
    quote = KiiexQuote(oms_id=1, bid_quote_id=2, ask_quote_id=3, account_id=4, instrument_id=5)
    assert (quote.oms_id, quote.bid_quote_id, quote.ask_quote_id) == (1, 2, 3)
    assert KiiexQuote(oms_id=1, bid_quote_id=2, ask_quote_id=3).account_id is None


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"oms_id": 0}, "oms_id"),
        ({"bid_quote_id": -1}, "bid_quote_id"),
        ({"ask_quote_id": 0}, "ask_quote_id"),
        ({"account_id": 0}, "account_id"),
        ({"instrument_id": -7}, "instrument_id"),
    ],
)
def test_quote_rejects_a_non_positive_id(fields: dict[str, int], bad_field: str) -> None:
    values = {"oms_id": 1, "bid_quote_id": 2, "ask_quote_id": 3, **fields}
    with pytest.raises(InvalidArgument) as caught:
        KiiexQuote(**values)
    violations = _violations(caught)
    assert list(violations) == [bad_field]
    assert str(fields[bad_field]) in violations[bad_field]


def test_quote_reports_all_violations_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        KiiexQuote(oms_id=0, bid_quote_id=-1, ask_quote_id=0, account_id=-2, instrument_id=0)
    assert set(_violations(caught)) == {
        "oms_id",
        "bid_quote_id",
        "ask_quote_id",
        "account_id",
        "instrument_id",
    }
    assert set(caught.value.metadata["fields"].split(",")) == set(_violations(caught))


def test_quote_requires_the_mandatory_ids() -> None:
    with pytest.raises(InvalidArgument) as caught:
        KiiexQuote(oms_id=None, bid_quote_id=None, ask_quote_id=1)  # type: ignore[arg-type]
    assert _violations(caught) == {"oms_id": "is required", "bid_quote_id": "is required"}


def test_a_quote_whose_legs_are_one_order_names_both_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        KiiexQuote(oms_id=1, bid_quote_id=1001, ask_quote_id=1001)
    assert list(_violations(caught)) == ["bid_quote_id", "ask_quote_id"]
    assert KiiexQuote(oms_id=1, bid_quote_id=1001, ask_quote_id=1002).payload() == {
        "omsId": 1, "bidQuoteId": 1001, "askQuoteId": 1002
    }  # fmt: skip
