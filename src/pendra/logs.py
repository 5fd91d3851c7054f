"""How Pendra's processes write their logs: the one place logging is configured (``configure``,
called once by each CLI daemon command), and the request id every line of a request carries.

Rules:
- Two formats. ``text`` (the default): on a terminal, Rich's coloured columns; anywhere else (a
  file, a pipe, journald under systemd) exactly one line per record, never wrapped, with
  newlines inside a message written as ``\\n`` so one record can never pass for several (a
  traceback follows on its own indented lines). ``json`` (``--log-format json`` or
  ``PENDRA_LOG_FORMAT=json``) for log shippers: one JSON object per line with ``time`` (UTC,
  ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` when there is one, and
  ``exception`` (the traceback text) when there is one.
- ``REQUEST_ID`` is the id of the HTTP request being served in this context; the request-id
  middleware (server/middleware.py) sets it, and a filter on the handler puts it on every record
  written while that request is served, in the request's task and in the tasks it starts.
- The level is ``PENDRA_LOG_LEVEL`` (INFO by default). Chatty libraries are held to WARNING:
  httpx, httpcore, websockets, uvicorn's access log, and Alembic (whose INFO lines at every start
  say only which migration context it uses). uvicorn's own loggers have no handler of their own
  (server/serve.py passes ``log_config=None``), so its lines come out in the same format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import Enum
from typing import TextIO

REQUEST_ID: ContextVar[str | None] = ContextVar("pendra_request_id", default=None)
# Loggers that say too much at INFO for an operator.
QUIET_LOGGERS = ("httpx", "httpcore", "uvicorn.access", "websockets", "alembic")
_HANDLER_NAME = "pendra"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def _utc(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class LineFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> [request <id>]`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{_utc(record)} {record.levelname} {record.name}: {message}"
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [request {request_id}]"
        if record.exc_info:
            line += "\n" + _indented(self.formatException(record.exc_info))
        elif record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return line


class TerminalFormatter(logging.Formatter):
    """For Rich on a terminal: ``<logger>: <message> [request <id>]`` (Rich adds time and level)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        text = f"{record.name}: {record.message}"
        request_id = getattr(record, "request_id", None)
        if request_id:
            text += f" [request {request_id}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {"time": _utc(record), "level": record.levelname,
                                    "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _indented(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def build_handler(fmt: LogFormat, stream: TextIO) -> logging.Handler:
    """The one handler for ``fmt`` writing to ``stream`` (Rich only for text on a terminal)."""
    handler: logging.Handler
    if fmt is LogFormat.json:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    elif stream.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), show_path=False,
                              rich_tracebacks=False)
        handler.setFormatter(TerminalFormatter(datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LineFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name(_HANDLER_NAME)
    return handler


def configure(fmt: LogFormat, *, level: str | None = None, stream: TextIO | None = None) -> None:
    """Send every log record to one handler on ``stream`` (stderr) in ``fmt``; replaces any
    handler an earlier call installed, so calling it twice does not double the lines."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(build_handler(fmt, stream or sys.stderr))
    root.setLevel((level or os.environ.get("PENDRA_LOG_LEVEL", "INFO")).upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
