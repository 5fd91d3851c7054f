"""How the emulated Ollama reads requests and writes answers: Go's JSON decoding errors, option
types, base64 images, NDJSON lines, timestamps and durations (shared/reference/ollama-api.md §1).

Rules: a malformed body is a 400 with Go's ``encoding/json`` wording; a known option with the wrong
type is a 500 naming Go's type (§5.1, ``Options.FromMap``), while a number for an integer option is
truncated toward zero and ``null`` leaves the default; unknown options are ignored. Errors before the
first byte are ``{"error": …}`` with their status; ``stream: false`` collects every line and turns
a trailing error line into a 500 (§1.2).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pendra.testing.ollama.facts import (OPTION_TYPE_WORDS, OPTION_TYPES, TOP_LOGPROBS_MAX,
                                         TOP_LOGPROBS_RANGE)

# modified_at/expires_at are the server's local time with an offset (§1.3); a fixed one keeps the
# emulator's answers the same on every machine.
LOCAL_TZ = timezone(timedelta(hours=-7))
BASE64 = re.compile(r"[A-Za-z0-9+/=\r\n]")


class OllamaError(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status)


def local_now() -> datetime:
    return datetime.now(LOCAL_TZ)


def rfc3339(moment: datetime) -> str:
    """Go's time.Time JSON: RFC 3339 with fractional seconds, trailing zeros trimmed (§1.3)."""
    text = moment.isoformat(timespec="microseconds")
    head, _, rest = text.partition(".")
    frac, sign, offset = rest[:6], rest[6:7], rest[7:]
    frac = frac.rstrip("0")
    tz = "Z" if moment.utcoffset() == timedelta(0) and moment.tzinfo is UTC else sign + offset
    return head + ("." + frac if frac else "") + tz


def now_text() -> str:
    """``created_at``: now, in UTC (§1.3)."""
    return rfc3339(datetime.now(UTC))


def json_text(value: Any) -> str:
    """Go's json.Marshal spacing: none."""
    return json.dumps(value, separators=(",", ":"))


def ndjson(line: dict[str, Any]) -> bytes:
    return (json_text(line) + "\n").encode()


def metrics(started: float, prompt: int, generated: int) -> dict[str, int]:
    """The six metrics of a final line, durations in nanoseconds (§1.3, §4.1)."""
    total = max(int((time.monotonic() - started) * 1e9), 1)
    return {"total_duration": total, "load_duration": min(total, 1_000_000),
            "prompt_eval_count": prompt, "prompt_eval_duration": max(total // 10, 1),
            "eval_count": generated, "eval_duration": max(total // 2, 1)}


# --- reading -------------------------------------------------------------------------------------------------


def go_value(value: Any) -> str:
    """How Go's UnmarshalTypeError names a JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {json_text(value)}" if isinstance(value, float) else "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def unmarshal_error(value: Any, field: str, go_type: str) -> OllamaError:
    """400 with encoding/json's text, e.g. "json: cannot unmarshal string into Go struct field
    ChatRequest.options of type map[string]interface {}" (§10, "malformed JSON / wrong type")."""
    return OllamaError(400, f"json: cannot unmarshal {go_value(value)} into Go struct field "
                            f"{field} of type {go_type}")


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object of a request; an empty body or bad JSON is a 400 (§4.1 errors)."""
    raw = await request.body()
    if not raw.strip():
        raise OllamaError(400, "missing request body")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(raw.rstrip()):
            raise OllamaError(400, "unexpected EOF") from exc
        char = raw[exc.pos:exc.pos + 1].decode(errors="replace")
        raise OllamaError(400, f"invalid character {char!r} looking for beginning of value") from exc
    if not isinstance(data, dict):
        raise OllamaError(400, f"json: cannot unmarshal {go_value(data)} into Go value of type "
                               "api.Request")
    return data


def check_options(options: Any, struct: str) -> dict[str, Any]:
    """The options Ollama would apply, read the way Options.FromMap reads them (§5.1)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise unmarshal_error(options, f"{struct}.options", "map[string]interface {}")
    applied: dict[str, Any] = {}
    for key, value in options.items():
        go_type = OPTION_TYPES.get(key)
        if go_type is None or value is None:
            continue  # unknown keys are logged and ignored; null keeps the default
        wrong = OllamaError(500, f'option "{key}" must be of type {OPTION_TYPE_WORDS[go_type]}')
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if go_type in ("int", "*int"):
            if not number:
                raise wrong
            applied[key] = int(value)  # Go's int64(float64): truncated toward zero
        elif go_type == "float32":
            if not number:
                raise wrong
            applied[key] = float(value)
        elif go_type == "*bool":
            if not isinstance(value, bool):
                raise wrong
            applied[key] = value
        else:  # []string
            if not isinstance(value, list):
                raise wrong
            if not all(isinstance(item, str) for item in value):
                raise OllamaError(500, f'option "{key}" must be of an array of strings')
            applied[key] = value
    return applied


def check_top_logprobs(body: dict[str, Any], struct: str) -> int:
    """``top_logprobs`` (an int in [0, 20]), checked before the model is even looked up (§4.1)."""
    value = body.get("top_logprobs")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (isinstance(value, float) and not value.is_integer()):
        raise unmarshal_error(value, f"{struct}.top_logprobs", "int")
    if not 0 <= value <= TOP_LOGPROBS_MAX:
        raise OllamaError(400, TOP_LOGPROBS_RANGE)
    return int(value)


def decode_images(images: Any, field: str) -> int:
    """How many images ``images`` holds; each must be raw standard base64 (no ``data:`` prefix):
    Go decodes ``[]ImageData`` while reading the body, so a bad one is a 400 (§1.3) naming the
    offset of the first character outside the alphabet (the end, when only the length is wrong)."""
    if images is None:
        return 0
    if not isinstance(images, list):
        raise unmarshal_error(images, field, "[]api.ImageData")
    for image in images:
        if not isinstance(image, str):
            raise unmarshal_error(image, field, "api.ImageData")
        bad = next((i for i, c in enumerate(image) if not BASE64.match(c)), None)
        try:
            base64.b64decode(image.replace("\r", "").replace("\n", ""), validate=True)
        except binascii.Error as exc:
            raise OllamaError(400, "illegal base64 data at input byte "
                                   f"{bad if bad is not None else len(image.rstrip('='))}") from exc
    return len(images)


# --- writing -------------------------------------------------------------------------------------------------


async def recorded(lines: AsyncIterator[dict[str, Any]],
                   on_cancel: Callable[[], None]) -> AsyncIterator[bytes]:
    """NDJSON bytes of ``lines``; ``on_cancel`` runs if the client leaves before the end."""
    finished = False
    try:
        async for line in lines:
            yield ndjson(line)
        finished = True
    finally:
        if not finished:
            on_cancel()


class CollectedResponse(Response):
    """``stream: false``: collect every line, then answer ``merge(lines)`` in one JSON object, or
    the trailing error line with a 500 (§1.2)."""

    def __init__(self, lines: AsyncIterator[dict[str, Any]],
                 merge: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        super().__init__(media_type="application/json; charset=utf-8")
        self._lines = lines
        self._merge = merge

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        collected = [line async for line in self._lines]
        if "error" in collected[-1]:
            response: Response = JSONResponse(collected[-1], status_code=500)
        else:
            response = Response(json_text(self._merge(collected)),
                                media_type="application/json; charset=utf-8")
        await response(scope, receive, send)

