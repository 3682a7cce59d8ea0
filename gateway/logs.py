"""Structured logs: one JSON object per line, on stderr, for log shippers to parse; the one
line of each call (`call_line`); and a throttle for warnings that could flood.

A record's `extra={...}` fields become top-level keys next to `ts`, `level`, `logger`, `message` and
`pid`, and, inside a traced call, `trace_id` and `span_id` (W3C hex: the caller's trace id when it
sent a `traceparent`). Every string of the line, tracebacks included, is scrubbed of the secrets the
process knows (`gateway.secrets`) before it is written: whatever an upstream echoed, and whatever a
library quoted in an exception, no configured secret or issued token gets out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway import tracing
from gateway.metrics import label
from gateway.model import CancelResult
from gateway.secrets import SECRETS, SecretBook
from gateway.tracing import trace_ids

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: SecretBook = SECRETS) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, under `server.workers > 1`
        }
        # Formatted as the record is made (the handler writes in the caller's context), so
        # the current span is the one of the call that logs.
        ids = trace_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(self._secrets.scrub_json(_plain(line)), ensure_ascii=False)


def _plain(value: Any) -> Any:
    """JSON-ready: what json cannot write becomes its text (so it can be scrubbed too)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Makes the root logger write JSON lines at `level` (a logging level name)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx2 logs each request line at INFO; the upstream metrics count them, so only
    # debugging wants them too.
    debugging = root.level <= logging.DEBUG
    logging.getLogger("httpx2").setLevel(logging.DEBUG if debugging else logging.WARNING)


@contextlib.contextmanager
def call_line(
    logger: logging.Logger,
    line: dict[str, object],
    *,
    answered: tuple[type[BaseException], ...],
    traced: Iterable[str],
) -> Iterator[dict[str, object]]:
    """The one log line of a call: the call fills `line` in, and it is written however the
    call ends. `answered`: exceptions that end a call already answered and in the line (an
    abort with its status); a cancelled call is CANCELLED; anything else is a bug, written
    as UNKNOWN with its traceback. The server span repeats the `traced` keys."""
    started = time.monotonic()
    failure: Exception | None = None
    try:
        yield line
    except asyncio.CancelledError:
        line["grpc_code"] = "CANCELLED"  # the caller went away, or its deadline passed
        raise
    except answered:
        raise
    except Exception as error:
        line["grpc_code"], failure = "UNKNOWN", error
        raise
    finally:
        line["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        tracing.note(lambda: {key: line[key] for key in traced if key in line})
        level = logging.ERROR if failure else logging.INFO
        logger.log(level, "cancel_job", extra=line, exc_info=failure)


def envelope_fields(result: CancelResult) -> dict[str, object]:
    """What the log line says of an envelope; the upstream's body stays out of logs."""
    return {
        "upstream": result.upstream,
        "operation": result.operation,
        "outcome": label(result.outcome),
        "reason": label(result.reason),
        "retryable": result.retryable,
        "attempts": result.attempts,
        "upstream_latency_ms": round(result.upstream_latency * 1000, 1),
        "detail": result.message,
    }


class EveryFewSeconds:
    """Lets a warning through at most once per `seconds`, counting what it held back."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = 0.0
        self.held_back = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.held_back += 1
            return False
        self._next = now + self._seconds
        return True
