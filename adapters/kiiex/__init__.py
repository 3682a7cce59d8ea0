"""KIIEX (AlphaPoint APEX) over its HTTP form, all of its dialect in this package:

    jobs       its job kinds (the contract's oneof members), validated, and their bodies
    options    the connection keys only it reads
    codes      its one code table, and the body fields that carry its credentials
    adapter    cancel, confirm (the read APIs) and login
    simulator  an ASGI fake with fault injection, for the sandbox and tests (not imported here)

`UPSTREAM` is what the composition root registers (`adapters.installed`).
"""

from adapters.kiiex.adapter import KiiexAdapter
from adapters.kiiex.codes import CODES, SECRETS_IN_BODIES
from adapters.kiiex.jobs import KiiexQuote, KiiexUserReport
from adapters.kiiex.options import ApiKeyLogin, KiiexOptions, PasswordLogin
from gateway.upstream import Upstream

UPSTREAM = Upstream(
    name="kiiex",
    jobs=(KiiexUserReport, KiiexQuote),
    codes=CODES,
    options=KiiexOptions,
    connect=KiiexAdapter,
    secret_fields=SECRETS_IN_BODIES,
    sandbox="adapters.kiiex.simulator:SANDBOX",
)

__all__ = [
    "CODES",
    "UPSTREAM",
    "ApiKeyLogin",
    "KiiexAdapter",
    "KiiexOptions",
    "KiiexQuote",
    "KiiexUserReport",
    "PasswordLogin",
]
