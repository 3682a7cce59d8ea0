"""What became of a cancel's request, told by the engine itself: a request counts as
possibly delivered only once a connection for it exists (a new one made, or a pooled one
taken), never before. A connect that never completed (DNS, refused, dropped SYNs, a proxy
or TLS handshake that failed) cannot have delivered anything: NOT_SENT.

The state lives in context variables of the calling task, set by `send` and by aiohttp's
trace hooks (which run in that task), so the guard can tell, when a call's whole budget
ran out, whether it ran out while still connecting.
"""

from __future__ import annotations

import contextvars
from types import SimpleNamespace
from typing import Any

import aiohttp

from gateway.model import Delivery


class Exchange:
    """What became of the request of one call that changes the upstream's state (a cancel).

    `send(..., exchange=...)` marks it: NOT_SENT until a connection for it exists,
    NO_ANSWER from then on (it may be on its way), ANSWERED once an HTTP answer came back,
    NOT_SENT again when the failure shows the request cannot have been delivered. When the
    call fails, the adapter's guard reads `delivery` to say whether it can have landed; an
    answer the adapter cannot read is its to mark (`unreadable`).
    """

    def __init__(self) -> None:
        self.delivery = Delivery.NOT_SENT

    def unreadable(self) -> None:
        self.delivery = Delivery.NO_ANSWER


_exchange: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "exchange", default=None
)
_connecting: contextvars.ContextVar[bool] = contextvars.ContextVar("connecting", default=False)


def starting(exchange: Exchange | None) -> None:
    """A request is about to go out: no connection for it yet. An exchange whose earlier
    request was answered (a refused session, sent again after a new login) is what its
    latest request is."""
    if exchange is not None:
        exchange.delivery = Delivery.NOT_SENT
    _exchange.set(exchange)
    _connecting.set(True)


def connected() -> None:
    """A connection for the request exists: from now on it may be delivered."""
    _connecting.set(False)
    exchange = _exchange.get()
    if exchange is not None and exchange.delivery is Delivery.NOT_SENT:
        exchange.delivery = Delivery.NO_ANSWER


def finished() -> None:
    """The request ended, answered or failed (a cancelled one stays as it was)."""
    _connecting.set(False)
    _exchange.set(None)


def still_connecting() -> bool:
    """Whether the task's last request was cut off before it had a connection."""
    return _connecting.get()


async def _on_connection(session: Any, context: SimpleNamespace, params: Any) -> None:
    connected()


def trace_config() -> aiohttp.TraceConfig:
    """The hooks that tell `connected()`: a new connection made (after the proxy's CONNECT
    and the TLS handshake), or a pooled one taken."""
    config = aiohttp.TraceConfig()
    config.on_connection_create_end.append(_on_connection)
    config.on_connection_reuseconn.append(_on_connection)
    return config
