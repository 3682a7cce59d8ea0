"""Structured logs: one JSON object per line, on stderr, for log shippers to parse.

A record's `extra={...}` fields become top-level keys next to `ts`, `level`, `logger` and
`message`. Nothing here redacts: secrets stay out of logs because the code that logs never
holds them (the servicer sees requests and envelopes; upstream bodies are already redacted).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Makes the root logger write JSON lines at `level` (a logging level name)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs each request line at INFO; the upstream metrics count them, so only
    # debugging wants them too.
    debugging = root.level <= logging.DEBUG
    logging.getLogger("httpx").setLevel(logging.DEBUG if debugging else logging.WARNING)
