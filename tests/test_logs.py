"""service.logs: JSON lines (one object per line: time, level, logger, message, the record's
fields, the exception) and `configure_logging` (root level and format, uvicorn's loggers
routed through the root handler)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.logs import JSONFormatter, configure_logging

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


def record(
    message: str = "GET %s %d",
    args: tuple[Any, ...] = ("/healthz", 200),
    *,
    fields: dict[str, Any] | None = None,
    exc_info: Any = None,
    level: int = logging.INFO,
) -> logging.LogRecord:
    made = logging.LogRecord("modelserve.test", level, __file__, 1, message, args, exc_info)
    if fields is not None:
        made.fields = fields
    return made


def parse_line(text: str) -> dict[str, Any]:
    assert "\n" not in text, f"not one line: {text!r}"
    entry = json.loads(text)
    assert isinstance(entry, dict), text
    return entry


def test_json_line_has_time_level_logger_message_and_the_fields() -> None:
    fields = {
        "method": "GET",
        "route": "/healthz",
        "status": 200,
        "latency_ms": 1.25,
        "model": None,
        "batch_size": 8,
        "path": Path("/some/file"),  # not JSON: written as its str
    }
    made = record(fields=fields)
    entry = parse_line(JSONFormatter().format(made))
    assert entry == {
        "time": entry["time"],
        "level": "info",
        "logger": "modelserve.test",
        "message": "GET /healthz 200",
        **fields,
        "path": "/some/file",
    }
    # UTC, in milliseconds, and the record's own time
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    logged = datetime.fromisoformat(entry["time"])
    assert logged.utcoffset() == timedelta(0)
    assert abs(logged.timestamp() - made.created) < 0.002


def test_json_line_without_fields_or_exception_has_the_four_keys() -> None:
    entry = parse_line(JSONFormatter().format(record("plain", (), level=logging.WARNING)))
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "warning" and entry["message"] == "plain"


def test_json_line_carries_the_exception_text_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        made = record("failed: %s", ("predict",), exc_info=sys.exc_info(), level=logging.ERROR)
    entry = parse_line(JSONFormatter().format(made))
    assert entry["level"] == "error" and entry["message"] == "failed: predict"
    assert entry["exception"].startswith("Traceback (most recent call last):"), entry
    assert "ValueError: bad\nvalue" in entry["exception"]
    assert "test_json_line_carries_the_exception_text_on_one_line" in entry["exception"]


@contextmanager
def preserved_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back (within the test, so pytest's
    own per-phase capture handlers are restored exactly as they were)."""
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    uvicorn = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in UVICORN_LOGGERS
    }
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, (handlers, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


def test_configure_logging_json(capsys: pytest.CaptureFixture[str]) -> None:
    with preserved_logging():
        logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
        configure_logging("debug", "json")
        root = logging.getLogger()
        assert root.level == logging.DEBUG
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JSONFormatter)
        for name in UVICORN_LOGGERS:  # into the root handler, in the same format
            assert logging.getLogger(name).handlers == []
            assert logging.getLogger(name).propagate is True

        logging.getLogger("modelserve.test").debug("hello %s", "world", extra={"fields": {"k": 1}})
        logging.getLogger("uvicorn.error").warning("Started server process")
        configure_logging("debug", "json")  # again: still one handler, not two lines per record
        assert len(root.handlers) == 1
        logging.getLogger("modelserve.test").info("once")
    lines = [parse_line(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["logger"], e["level"], e["message"]) for e in lines] == [
        ("modelserve.test", "debug", "hello world"),
        ("uvicorn.error", "warning", "Started server process"),
        ("modelserve.test", "info", "once"),
    ]
    assert lines[0]["k"] == 1


def test_configure_logging_text(capsys: pytest.CaptureFixture[str]) -> None:
    with preserved_logging():
        configure_logging("warning", "text")
        root = logging.getLogger()
        assert root.level == logging.WARNING
        (handler,) = root.handlers
        assert handler.formatter is not None
        assert not isinstance(handler.formatter, JSONFormatter)
        logging.getLogger("modelserve.test").info("dropped: below the level")
        logging.getLogger("modelserve.test").warning("careful %d", 3)
    (line,) = capsys.readouterr().err.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} WARNING modelserve\.test: careful 3", line), line
