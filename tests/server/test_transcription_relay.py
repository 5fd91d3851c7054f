"""The control plane's side of transcription, against fake workers on real WebSockets: what a
version-4 worker is sent (the upload, byte for byte), how its answer reaches the client, a
malformed answer, and a version-3 worker that is never sent a transcription."""

from __future__ import annotations

import base64

import httpx

from api_fixtures import TIMEOUT_S, Api, FakeWorker, fleet
from pendra.protocol.frames import Chunk, End, Request
from pendra.protocol.inventory import ModelInfo
from pendra.protocol.transcription import decode_job, json_answer, text_answer

WHISPER = ModelInfo(id="Systran/faster-whisper-small", backend="speaches",
                    capabilities=("audio",), family="whisper")
AUDIO = bytes(range(256)) * 64


def client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                             headers={"Authorization": f"Bearer {api.key}"})


async def echo(worker: FakeWorker, req: Request) -> None:
    """Answers in the requested format: the text is the audio's length and first field values."""
    job = decode_job(req.body)
    said = f"{len(job.audio)} bytes, {job.language}"
    data = text_answer(said) if job.response_format in ("text", "srt", "vtt") \
        else json_answer({"text": said, "usage": {"type": "tokens", "input_tokens": 7,
                                                  "output_tokens": 3}})
    await worker.send(Chunk(id=req.id, data=data))
    await worker.send(End(id=req.id, usage={"prompt_tokens": 7, "completion_tokens": 3}))


async def malformed(worker: FakeWorker, req: Request) -> None:
    await worker.send(Chunk(id=req.id, data={"text": "not in the v4 shape"}))
    await worker.send(End(id=req.id))


async def test_a_v4_worker_gets_the_upload_and_its_answer_reaches_the_client(api: Api) -> None:
    async with fleet(api, FakeWorker("ears", models=(WHISPER,), script=echo)) as (worker,):
        async with client(api) as http:
            as_json = await http.post("/api/v1/audio/transcriptions", data={
                "model": WHISPER.id, "language": "cy", "prompt": "Pendra", "temperature": "0.5",
                "timestamp_granularities[]": ["word", "segment"], "hotwords": "Speaches"},
                files={"file": ("talk.wav", AUDIO, "audio/wav")})
            as_text = await http.post("/v1/audio/transcriptions", data={
                "model": WHISPER.id, "response_format": "vtt"},
                files={"file": ("talk.wav", AUDIO, "audio/wav")})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["text"] == f"{len(AUDIO)} bytes, cy"
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["x-worker-name"] == "ears"
    assert as_text.text == f"{len(AUDIO)} bytes, None"
    assert as_text.headers["content-type"] == "text/plain; charset=utf-8"
    sent = worker.requests[0]
    assert sent.kind == "transcribe" and sent.model == WHISPER.id
    assert base64.b64decode(sent.body["file"]) == AUDIO
    assert {k: v for k, v in sent.body.items() if k != "file"} == {
        "model": WHISPER.id, "filename": "talk.wav", "content_type": "audio/wav",
        "response_format": "json", "language": "cy", "prompt": "Pendra", "temperature": 0.5,
        "timestamp_granularities": ["word", "segment"], "extra": {"hotwords": "Speaches"}}


async def test_an_answer_in_another_shape_is_the_workers_fault(api: Api) -> None:
    async with fleet(api, FakeWorker("garbled", models=(WHISPER,), script=malformed)):
        async with client(api) as http:
            reply = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER.id},
                                    files={"file": ("a.wav", AUDIO, "audio/wav")})
    assert reply.status_code == 502
    assert "malformed" in reply.json()["error"]["message"]


async def test_a_v3_worker_is_never_sent_a_transcription(api: Api) -> None:
    """A worker speaking protocol 3 listing an audio model: the model is listed for what else it
    does (nothing here), not as transcription, and no transcription request reaches it."""
    async with fleet(api, FakeWorker("elder", models=(WHISPER,), script=echo,
                                     protocol_version=3)) as (worker,):
        async with client(api) as http:
            listed = await http.get("/api/v1/models", params={"type": "transcription"})
            reply = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER.id},
                                    files={"file": ("a.wav", AUDIO, "audio/wav")})
    assert listed.json()["data"] == []
    assert reply.status_code == 501
    assert worker.requests == []
