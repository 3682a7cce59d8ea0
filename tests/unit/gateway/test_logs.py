"""JSON log lines: one object per line, extras as keys, tracebacks kept, level from config."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.installed import REGISTRY
from gateway.config import ConfigError, parse_config
from gateway.logs import JsonFormatter, configure_logging
from tests.conftest import KIIEX_ENV, kiiex_connection


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx2").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx2").setLevel(httpx_level)


def _format(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.service", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_record_becomes_one_json_object_with_its_extras() -> None:
    line = _format(_record("cancel %s", "job", request_id="rq-1", attempts=2, latency_ms=1.5))
    assert line["message"] == "cancel job"
    assert (line["level"], line["logger"]) == ("info", "gateway.service")
    assert line["ts"].endswith("+00:00")
    assert {k: line[k] for k in ("request_id", "attempts", "latency_ms")} == {
        "request_id": "rq-1",
        "attempts": 2,
        "latency_ms": 1.5,
    }
    assert not {"args", "msg", "levelno"} & set(line)  # LogRecord internals stay out


def test_values_json_cannot_hold_are_written_as_text() -> None:
    line = _format(_record("x", peer=object(), note="line\nbreak"))
    assert line["peer"].startswith("<object")
    assert line["note"] == "line\nbreak"


def test_a_traceback_is_kept_in_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = _format(record)
    assert "ValueError: boom" in line["exception"]


@pytest.mark.usefixtures("restored_root")
def test_configure_logging_writes_json_lines_at_the_level() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", stream)
    logging.getLogger("gateway.service").info("dropped")
    logging.getLogger("gateway.service").warning("kept", extra={"request_id": "rq-2"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"], line["request_id"]) for line in lines] == [("kept", "rq-2")]
    assert logging.getLogger("httpx2").level == logging.WARNING


def _log_level(value: Any) -> str:
    server = {"log_level": value, "allow_unauthenticated": True}
    data = {"server": server, "connections": {"k": kiiex_connection()}}
    return parse_config(data, KIIEX_ENV, REGISTRY.option_schemas).server.log_level


def test_log_level_comes_from_the_server_table() -> None:
    assert _log_level("debug") == "DEBUG"
    with pytest.raises(ConfigError) as refused:
        _log_level("loud")
    assert str(refused.value).startswith("server.log_level: must be one of")
