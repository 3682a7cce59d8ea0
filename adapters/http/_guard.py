"""The one guard every adapter call runs in, cancel and confirm alike: whatever happens on
the way, the call ends as an answer built from the adapter's own table.

    Exception
    ├── UpstreamFailure   no usable answer: `code` is a row of the adapter's table
    └── AuthRefused       the upstream refused the gateway's credentials

Anything else an adapter raises is a bug or an answer no branch foresaw: logged with its
traceback, and answered as `unreadable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from adapters.http._codes import TIMEOUT, UNREACHABLE, UNREADABLE
from adapters.http._delivery import still_connecting

Answer = TypeVar("Answer")
log = logging.getLogger(__name__)


class UpstreamFailure(Exception):
    """A call that produced no usable answer; `code` is a key of the adapter's table."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthRefused(Exception):
    """The upstream refused the gateway's credentials; the message is the upstream's own."""


async def answered(
    call: Awaitable[Answer],
    *,
    timeout: float,
    refused_code: str,
    on_failure: Callable[[UpstreamFailure], Answer],
) -> Answer:
    """Runs one adapter call to an answer: `on_failure` turns any failure into one.

    `timeout` bounds the whole call, logins and re-logins included: httpx's own timeouts
    bound each network step, and a server dripping bytes would otherwise hold a call for
    as long as it likes. A refusal of the credentials becomes `refused_code`.
    """
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        failure = _out_of_time(timeout)
    except UpstreamFailure as raised:
        failure = raised
    except AuthRefused as refused:
        failure = UpstreamFailure(refused_code, str(refused))
    except Exception:
        log.exception("could not read an upstream answer")
        failure = UpstreamFailure(UNREADABLE, "the upstream's answer could not be read")
    return on_failure(failure)


def _out_of_time(timeout: float) -> UpstreamFailure:
    """The whole budget ran out: while connecting, nothing was sent and the upstream is as
    good as unreachable; after, an answer is missing."""
    if still_connecting():
        return UpstreamFailure(UNREACHABLE, f"no connection within {timeout:.2f}s")
    return UpstreamFailure(TIMEOUT, f"no complete answer within {timeout:.2f}s")
