"""A fourth upstream, as a package: what a new upstream adds (docs/ADDING_AN_UPSTREAM.md).
The test copies it to `adapters/ticketing/` of a scratch checkout, imports rewritten."""

from gateway.upstream import Upstream
from tests.integration.fourth_upstream.ticketing.adapter import TicketingAdapter
from tests.integration.fourth_upstream.ticketing.codes import CODES
from tests.integration.fourth_upstream.ticketing.jobs import TicketingJob
from tests.integration.fourth_upstream.ticketing.options import TicketingOptions

UPSTREAM = Upstream(
    name="ticketing",
    jobs=(TicketingJob,),
    codes=CODES,
    options=TicketingOptions,
    connect=TicketingAdapter,
    sandbox="tests.integration.fourth_upstream.ticketing.simulator:SANDBOX",
)
