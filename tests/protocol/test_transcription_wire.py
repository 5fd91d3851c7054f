"""Transcription on the wire (protocol v4): the request body both ends share, the answer shapes,
the reported usage, and older workers kept out of it."""

from __future__ import annotations

import base64

import pytest

from pendra.protocol.frames import PROTOCOL_VERSION, SUPPORTED_VERSIONS, Request, dump_frame, parse_frame
from pendra.protocol.inventory import ModelInfo
from pendra.protocol.transcription import (MAX_AUDIO_BYTES, TRANSCRIPTION_SINCE, AnswerError,
                                           TranscriptionJob, decode_job, job_body, json_answer,
                                           render, reported_usage, text_answer)
from pendra.server.hub import transcription_capable


def test_the_job_survives_a_request_frame_byte_for_byte() -> None:
    audio = bytes(range(256)) * 40
    job = TranscriptionJob(model="whisper", audio=audio, filename="a b.wav",
                           content_type="audio/wav", response_format="vtt", language="cy",
                           prompt="Llanfair", temperature=0.3,
                           timestamp_granularities=("word",), extra={"hotwords": "Pendra"})
    frame = parse_frame(dump_frame(Request(id="req_1", kind="transcribe", model="whisper",
                                           body=job_body(job))))
    assert isinstance(frame, Request)
    assert decode_job(frame.body) == job
    assert job.form_fields("Systran/x") == {
        "hotwords": "Pendra", "model": "Systran/x", "response_format": "vtt", "language": "cy",
        "prompt": "Llanfair", "temperature": "0.3", "timestamp_granularities[]": ["word"]}


@pytest.mark.parametrize(("change", "says"), [
    ({"file": "not base64!"}, "not base64"),
    ({"file": 12}, "`file` must be a string"),
    ({"file": "A" * ((MAX_AUDIO_BYTES + 2) // 3 * 4 + 4)}, "over"),
    ({"response_format": "xml"}, "unknown response_format"),
    ({"temperature": True}, "`temperature` must be a number"),
    ({"timestamp_granularities": [1]}, "timestamp_granularities"),
    ({"extra": {"a": 1}}, "`extra`"),
])
def test_a_body_that_does_not_fit_is_refused_naming_the_field(change: dict[str, object],
                                                              says: str) -> None:
    body = {"model": "m", "file": base64.b64encode(b"RIFF").decode(), **change}
    with pytest.raises(ValueError, match=says):
        decode_job(body)


def test_answers_render_as_json_or_text_and_nothing_else() -> None:
    assert render(json_answer({"text": "hi"})) == ({"text": "hi"}, "application/json")
    assert render(text_answer("1\n00:00:00,000 --> ")) == ("1\n00:00:00,000 --> ",
                                                          "text/plain; charset=utf-8")
    for bad in ({"text": "hi"}, {"content_type": "x", "json": "str"},
                {"content_type": "x", "text": "a", "json": {}}):
        with pytest.raises(AnswerError):
            render(bad)


def test_only_reported_tokens_become_usage() -> None:
    assert reported_usage({"text": "x"}) == {}
    assert reported_usage({"usage": {"type": "duration", "seconds": 7}}) == {}
    assert reported_usage({"usage": {"type": "tokens", "input_tokens": 10,
                                     "output_tokens": 4}}) == {
        "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert reported_usage({"usage": {"type": "tokens", "input_tokens": -1}}) == {}


def test_workers_older_than_v4_serve_no_transcription() -> None:
    """v4 is spoken here and v1–v3 are still accepted; a model of an older worker loses `audio`
    (so it is neither listed nor routed as a transcription model), a v4 worker's keeps it."""
    assert PROTOCOL_VERSION == TRANSCRIPTION_SINCE == 4 and SUPPORTED_VERSIONS == {1, 2, 3, 4}
    model = ModelInfo(id="whisper", backend="speaches", capabilities=("audio",))
    assert transcription_capable(model, 3).types == ()
    assert transcription_capable(model, 4).types == ("transcription",)
    chat = ModelInfo(id="llama", backend="ollama", capabilities=("completion", "audio"))
    assert transcription_capable(chat, 2).types == ("chat",)
