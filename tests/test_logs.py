"""pendra/logs.py: the formats a record can be written in, the request id filter, and that
configuring twice does not double the lines. (A live `pendra up` writing them to a file is in
tests/integration/test_observability.py.)"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pendra.logs import REQUEST_ID, JsonFormatter, LineFormatter, LogFormat, configure

PENDRA = str(Path(sys.executable).with_name("pendra"))


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("pendra.test", logging.WARNING, __file__, 1, message, args, exc_info)
    return made


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_a_plain_line_is_one_line_whatever_the_message_holds() -> None:
    """Newlines in a message are written as \\n, so one record is one line; the request id ends
    it when there is one; a traceback follows on indented lines."""
    line = LineFormatter().format(record("first\nsecond %s", "x" * 200))
    assert "\n" not in line and "first\\nsecond " + "x" * 200 in line
    assert line.split(" ", 3)[1:3] == ["WARNING", "pendra.test:"]
    tagged = record("served")
    tagged.request_id = "req_abc"
    assert LineFormatter().format(tagged).endswith("served [request req_abc]")
    with_trace = LineFormatter().format(record("failed", exc=True)).splitlines()
    assert with_trace[0].endswith("failed")
    assert all(line.startswith("    ") for line in with_trace[1:]) and "ValueError: boom" in \
        with_trace[-1]


def test_json_is_one_object_per_record_with_the_exception_text() -> None:
    """time (UTC), level, logger, message, request_id when set, exception text when raised."""
    failed = record("line one\nline two", exc=True)
    failed.request_id = "req_1"
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["level"] == "WARNING" and entry["logger"] == "pendra.test"
    assert entry["message"] == "line one\nline two" and entry["request_id"] == "req_1"
    assert entry["time"].endswith("Z") and "ValueError: boom" in entry["exception"]
    assert "request_id" not in json.loads(JsonFormatter().format(record("quiet")))


def test_the_request_id_in_context_reaches_every_record(restore_root: None) -> None:
    """A record logged while REQUEST_ID is set carries it, whichever logger wrote it; one logged
    outside carries none."""
    stream = io.StringIO()
    configure(LogFormat.json, level="INFO", stream=stream)
    logging.getLogger("pendra.outside").info("before")
    token = REQUEST_ID.set("req_ctx")
    try:
        logging.getLogger("some.library").warning("inside")
    finally:
        REQUEST_ID.reset(token)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e.get("request_id")) for e in entries] == [("before", None),
                                                                       ("inside", "req_ctx")]


def test_configuring_twice_keeps_one_handler_and_quietens_alembic(restore_root: None) -> None:
    """A second configure replaces the first handler (no doubled lines); Alembic's INFO is held
    back at start, its warnings are not."""
    stream = io.StringIO()
    configure(LogFormat.text, level="INFO", stream=io.StringIO())
    configure(LogFormat.text, level="INFO", stream=stream)
    logging.getLogger("pendra.x").info("once")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("alembic.runtime.migration").warning("something odd")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("pendra.x: once")
    assert lines[1].endswith("alembic.runtime.migration: something odd")


def test_an_unknown_log_format_is_refused_naming_the_choices(tmp_path: Path) -> None:
    """`--log-format yaml` and PENDRA_LOG_FORMAT=xml stop the daemon before it starts, naming
    the formats it knows."""
    env = {**os.environ, "PENDRA_HOME": str(tmp_path / "home")}
    for args, extra in ((["server", "--log-format", "yaml"], {}),
                        (["server"], {"PENDRA_LOG_FORMAT": "xml"})):
        done = subprocess.run([PENDRA, *args, "--port", "0"], capture_output=True, text=True,
                              timeout=60, env=env | extra)
        assert done.returncode == 2, done.stderr
        assert "text" in done.stderr and "json" in done.stderr
    assert not (tmp_path / "home").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_rich_columns_with_the_request_id(restore_root: None) -> None:
    """On a terminal the text format is Rich's (time and level columns), still naming the logger
    and the request, and still showing a traceback."""
    from rich.logging import RichHandler

    stream = _Terminal()
    configure(LogFormat.text, level="INFO", stream=stream)
    assert any(isinstance(h, RichHandler) for h in logging.getLogger().handlers)
    token = REQUEST_ID.set("req_tty")
    try:
        logging.getLogger("pendra.tty").warning("served")
    finally:
        REQUEST_ID.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pendra.tty").exception("it failed")
    text = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())  # Rich's colours
    assert re.search(r"WARNING +pendra\.tty: served \[request req_tty\]", text), text
    assert re.search(r"ERROR +pendra\.tty: it failed", text) and "ValueError: boom" in text
