"""Zuora's job kind validates itself: the id lands in a URL path."""

from __future__ import annotations

import pytest

from adapters.zuora import ZuoraReportRun
from gateway.errors import InvalidArgument

RUN_ID = "0123456789abcdef0123456789abcdef"


def _violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_report_run_accepts_32_lower_case_hex() -> None:
    assert ZuoraReportRun(RUN_ID).report_run_id == RUN_ID


@pytest.mark.parametrize(
    "bad",
    [
        RUN_ID.upper(),
        RUN_ID[:31],
        RUN_ID + "0",
        RUN_ID + "\n",
        "",
        "../../oauth/token",
        "%2e%2e",
        "%2e%2e%2f" + RUN_ID[:23],
        RUN_ID[:30] + "/x",
    ],
)
def test_report_run_rejects_anything_else(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ZuoraReportRun(bad)
    assert list(_violations(caught)) == ["report_run_id"]
