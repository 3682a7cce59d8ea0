"""Zuora Reporting ("cancel a report run"), all of its dialect in this package:

    jobs       its job kind (the contract's oneof member), validated
    options    the connection keys only it reads (data-center presets, credentials)
    codes      its one code table, and the body fields that carry its credentials
    adapter    cancel, confirm (GET the run) and the OAuth token
    simulator  an ASGI fake with fault injection, for the sandbox and tests (not imported here)

`UPSTREAM` is what the composition root registers (`adapters.installed`).
"""

from adapters.zuora.adapter import ZuoraAdapter
from adapters.zuora.codes import CODES, SECRETS_IN_BODIES
from adapters.zuora.jobs import ZuoraReportRun
from adapters.zuora.options import DATA_CENTERS, ZuoraOptions
from gateway.upstream import Upstream

UPSTREAM = Upstream(
    name="zuora",
    jobs=(ZuoraReportRun,),
    codes=CODES,
    options=ZuoraOptions,
    connect=ZuoraAdapter,
    secret_fields=SECRETS_IN_BODIES,
    sandbox="adapters.zuora.simulator:SANDBOX",
)

__all__ = ["CODES", "DATA_CENTERS", "UPSTREAM", "ZuoraAdapter", "ZuoraOptions", "ZuoraReportRun"]
