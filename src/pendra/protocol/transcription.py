"""Transcription on /ws/gpu (protocol version 4): the ``request`` body a worker gets and the answer
it sends back. One owner for both ends.

Rules:
- The control plane parses the client's multipart upload at its edge (server/api/upload.py) and
  sends a ``request`` frame of kind ``transcribe`` whose ``body`` is JSON: the audio in ``file``
  (standard base64, padded), ``filename`` and ``content_type`` as the client sent them, and the
  typed fields of OpenAI's request (``model``, ``language``, ``prompt``, ``response_format``,
  ``temperature``, ``timestamp_granularities``) plus any other text fields the client added
  (``extra``: a backend may know them, e.g. Speaches' ``hotwords``). Frames stay JSON text: the
  audio is base64 inside the body (4/3 of its size on the wire; see docs/protocol.md for the
  measurement and why not binary frames).
- Audio is at most ``MAX_AUDIO_BYTES`` on the wire: its base64 (4/3) plus the other fields stays
  under the request frame's ``MAX_FRAME_BYTES``. The control plane's own limit (``max_audio_bytes``,
  25 MiB by default, OpenAI's) may not exceed it; the worker checks it again (``decode_job``).
- The answer is exactly one ``chunk`` whose ``data`` is ``{"content_type": <media type>, "json":
  <object>}`` for json/verbose_json or ``{"content_type": <media type>, "text": <string>}`` for
  text/srt/vtt, then an ``end`` whose ``usage`` holds tokens only when the backend reported tokens
  (OpenAI's ``usage: {"type": "tokens", ...}``); nothing is invented. ``render`` turns the data into
  the HTTP body and its content type; anything else is the worker's fault.
- Only workers speaking ``TRANSCRIPTION_SINCE`` or later get transcription requests: the control
  plane strips the ``audio`` capability from the inventory of an older worker (whose body format
  differed), so none of its models is advertised or routed as a transcription model.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

from pendra.protocol.frames import KIND_SINCE

# The first protocol version whose workers take this body and send this answer (frames.KIND_SINCE).
TRANSCRIPTION_SINCE = KIND_SINCE["transcribe"]
# Largest audio a request frame carries: base64 of 45 MiB is 60 MiB, under the 64 MiB frame limit
# with room for the other fields (each bounded by the edge).
MAX_AUDIO_BYTES = 45 * 1024 * 1024
# OpenAI's limit on an uploaded audio file (25 MB), the control plane's default.
DEFAULT_MAX_AUDIO_BYTES = 25 * 1024 * 1024

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt")
JSON_FORMATS = frozenset({"json", "verbose_json"})
# What the client gets for each format: JSON objects, or the text as UTF-8 plain text.
JSON_MEDIA_TYPE = "application/json"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


class AnswerError(ValueError):
    """A worker's transcription answer that is not in the shape of this module."""


@dataclass(frozen=True)
class TranscriptionJob:
    """One transcription as the worker runs it: the audio bytes and the typed fields."""

    model: str
    audio: bytes
    filename: str
    content_type: str
    response_format: str = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    timestamp_granularities: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def form_fields(self, model: str) -> dict[str, str | list[str]]:
        """The multipart text fields an OpenAI-compatible server takes, for ``model`` (a list is
        one field repeated, as OpenAI's SDK sends ``timestamp_granularities[]``)."""
        fields: dict[str, str | list[str]] = dict(self.extra)
        fields.update({"model": model, "response_format": self.response_format})
        if self.language is not None:
            fields["language"] = self.language
        if self.prompt is not None:
            fields["prompt"] = self.prompt
        if self.temperature is not None:
            fields["temperature"] = repr(float(self.temperature))
        if self.timestamp_granularities:
            fields["timestamp_granularities[]"] = list(self.timestamp_granularities)
        return fields


def job_body(job: TranscriptionJob) -> dict[str, Any]:
    """The ``request`` body for ``job`` (the control plane's side)."""
    body: dict[str, Any] = {
        "model": job.model, "file": base64.b64encode(job.audio).decode("ascii"),
        "filename": job.filename, "content_type": job.content_type,
        "response_format": job.response_format,
    }
    if job.language is not None:
        body["language"] = job.language
    if job.prompt is not None:
        body["prompt"] = job.prompt
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if job.timestamp_granularities:
        body["timestamp_granularities"] = list(job.timestamp_granularities)
    if job.extra:
        body["extra"] = dict(job.extra)
    return body


def decode_job(body: dict[str, Any]) -> TranscriptionJob:
    """The worker's side of ``job_body``; ValueError naming the field when it does not fit."""
    def text(name: str, *, optional: bool = False) -> str | None:
        value = body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise ValueError(f"transcription body: `{name}` must be a string")
        return value

    encoded = text("file") or ""
    if len(encoded) > (MAX_AUDIO_BYTES + 2) // 3 * 4:
        raise ValueError(f"transcription body: `file` is over {MAX_AUDIO_BYTES} bytes")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("transcription body: `file` is not base64") from exc
    response_format = text("response_format", optional=True) or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ValueError(f"transcription body: unknown response_format {response_format[:20]!r}")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)):
        raise ValueError("transcription body: `temperature` must be a number")
    granularities = body.get("timestamp_granularities") or []
    extra = body.get("extra") or {}
    if not (isinstance(granularities, list) and all(isinstance(g, str) for g in granularities)):
        raise ValueError("transcription body: `timestamp_granularities` must be strings")
    if not (isinstance(extra, dict) and all(isinstance(v, str) for v in extra.values())):
        raise ValueError("transcription body: `extra` must map names to strings")
    return TranscriptionJob(
        model=text("model") or "", audio=audio, filename=text("filename") or "audio",
        content_type=text("content_type") or "application/octet-stream",
        response_format=response_format, language=text("language", optional=True),
        prompt=text("prompt", optional=True),
        temperature=None if temperature is None else float(temperature),
        timestamp_granularities=tuple(granularities), extra=dict(extra))


def json_answer(data: dict[str, Any]) -> dict[str, Any]:
    return {"content_type": JSON_MEDIA_TYPE, "json": data}


def text_answer(text: str) -> dict[str, Any]:
    return {"content_type": TEXT_MEDIA_TYPE, "text": text}


def render(data: dict[str, Any]) -> tuple[Any, str]:
    """(the JSON object or the text, its media type) for a worker's answer; AnswerError when the
    answer is not one of this module's two shapes."""
    if set(data) == {"content_type", "json"} and isinstance(data["json"], dict):
        return data["json"], JSON_MEDIA_TYPE
    if set(data) == {"content_type", "text"} and isinstance(data["text"], str):
        return data["text"], TEXT_MEDIA_TYPE
    raise AnswerError("the transcription answer has neither a JSON object nor text")


def reported_usage(answer: dict[str, Any]) -> dict[str, int]:
    """Token counts from an OpenAI transcription answer's ``usage`` when it reports tokens
    (``{"type": "tokens", "input_tokens", "output_tokens"}``); empty otherwise (a ``duration``
    usage or none at all: seconds are not tokens, and nothing is made up)."""
    usage = answer.get("usage")
    if not isinstance(usage, dict) or usage.get("type") != "tokens":
        return {}
    counts = {}
    for ours, theirs in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
        value = usage.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts[ours] = value
    if counts:
        counts["total_tokens"] = sum(counts.values())
    return counts
