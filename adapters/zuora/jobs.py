"""Zuora's job kind: the `zuora_report_run` member of the contract's `job` oneof."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from gateway.jobs import JobKind, matching, raise_if

_REPORT_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ZuoraReportRun(JobKind):
    """Zuora Reporting API: cancel one report run, by its 32-hex id."""

    upstream: ClassVar[str] = "zuora"
    operation: ClassVar[str] = "DeleteReportRun"
    proto_field: ClassVar[str] = "zuora_report_run"
    legs: ClassVar[tuple[str, ...]] = ("report_run",)
    cli_name: ClassVar[str] = "zuora-run"
    report_run_id: str

    def __post_init__(self) -> None:
        # Strict on purpose: the id lands in a URL path, so nothing else may pass.
        shape = "32 lower-case hex characters"
        raise_if(matching("report_run_id", self.report_run_id, _REPORT_RUN_ID, shape))
