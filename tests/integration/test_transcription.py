"""Transcription end to end: ``pendra up`` with an emulated Speaches and an emulated Ollama 0.20+
(both real processes on real sockets), driven by the official openai SDK with WAV files the tests
write; model installs and removals in Speaches through the admin API; Speaches going away and
coming back."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import sqlite3
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import yaml
from openai import AsyncOpenAI

from cluster import FAST, PENDRA, Proc
from pendra.testing.servers import EmulatorProcess, run_emulator, run_speaches
from pendra.testing.speaches import audio as heard
from polling import eventually
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

WHISPER = "Systran/faster-whisper-tiny.en"
OLLAMA_AUDIO = "gemma3n-audio:latest"
# Small, so a too-large upload costs little: 400 KB (a WAV of ~12 s at 16 kHz mono 16-bit).
MAX_AUDIO = 400_000


def wav(seconds: float, *, rate: int = 16000, pitch: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone."""
    frames = int(seconds * rate)
    samples = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * pitch * i / rate)))
                       for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return out.getvalue()


@dataclass
class Up:
    url: str
    key: str
    home: Path
    proc: Proc
    speaches: EmulatorProcess
    ollama: EmulatorProcess
    wav_path: Path

    def api(self, *, root: bool = False) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.url + ("/v1" if root else "/api/v1"), api_key=self.key,
                           max_retries=0, timeout=30 * WAIT)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30 * WAIT,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def admin(self) -> httpx.AsyncClient:
        state = yaml.safe_load((self.home / "server.yaml").read_text())
        return httpx.AsyncClient(base_url=self.url, timeout=30 * WAIT,
                                 headers={"Authorization": f"Bearer {state['admin_token']}"})

    async def model_ids(self, kind: str = "transcription") -> set[str]:
        async with self.http() as http:
            listed = await http.get("/api/v1/models", params={"type": kind})
        return {m["id"] for m in listed.json()["data"]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def up(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Up]:
    root = tmp_path_factory.mktemp("transcription")
    wav_path = root / "speech.wav"
    wav_path.write_bytes(wav(7.0))
    async with run_speaches(models=[WHISPER]) as speaches, \
            run_emulator(version="0.20.0") as ollama:
        await ollama.add_model({"name": OLLAMA_AUDIO, "family": "gemma3n",
                                "capabilities": ["completion", "audio"]})
        env = {**os.environ, **FAST, "PENDRA_HOME": str(root / "home"),
               "OLLAMA_ENDPOINT": ollama.base_url, "SPEACHES_ENDPOINT": speaches.base_url,
               "MAX_AUDIO_BYTES": str(MAX_AUDIO)}
        proc = Proc("up", [PENDRA, "up", "--port", "0"], env, root / "up.log")
        await proc.start()
        try:
            url = (await proc.wait_for_line(r"Pendra is running at (http://\S+)", 60)).group(1)
            key = (await proc.wait_for_line(r"API key:\s+(pdr_sk_\S+)", 10)).group(1)
            running = Up(url, key, root / "home", proc, speaches, ollama, wav_path)
            await eventually(lambda: _has(running, {WHISPER, OLLAMA_AUDIO}), timeout_s=30,
                             what="both transcription models listed")
            yield running
        finally:
            await proc.stop()


async def _has(up: Up, models: set[str]) -> bool:
    return models <= await up.model_ids()


async def test_every_response_format_through_the_openai_sdk(up: Up) -> None:
    """json, text, verbose_json, srt and vtt come back as Speaches made them (the emulator's text
    is derived from the audio bytes, so the expected words are known), with language, prompt and
    temperature carried to Speaches; text formats are text/plain."""
    expected = heard.segments(heard.decode(up.wav_path.read_bytes(), "audio/wav"))
    async with up.api() as api:
        with up.wav_path.open("rb") as f:
            as_json = await api.audio.transcriptions.create(
                model=WHISPER, file=f, language="en", prompt="Pendra, Speaches", temperature=0.2)
        assert as_json.text == heard.text_of(expected)
        with up.wav_path.open("rb") as f:
            verbose = await api.audio.transcriptions.create(
                model=WHISPER, file=f, response_format="verbose_json",
                timestamp_granularities=["word", "segment"])
        assert verbose.duration == pytest.approx(7.0)
        assert [s.text for s in verbose.segments or []] == [s.text for s in expected]
        assert verbose.words and verbose.words[0].word == expected[0].text.split()[0]
        with up.wav_path.open("rb") as f:
            text = await api.audio.transcriptions.create(model=WHISPER, file=f,
                                                         response_format="text")
        assert text.strip() == heard.text_of(expected)
        with up.wav_path.open("rb") as f:
            srt = await api.audio.transcriptions.create(model=WHISPER, file=f,
                                                        response_format="srt")
        assert srt.startswith("1\n00:00:00,000 --> 00:00:05,000\n") and "2\n00:00:05,000" in srt
        with up.wav_path.open("rb") as f:
            vtt = await api.audio.transcriptions.create(model=WHISPER, file=f,
                                                        response_format="vtt")
        assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\n")
    sent = [r for r in await up.speaches.requests("/v1/audio/transcriptions")]
    first = sent[-5]
    assert first["fields"]["language"] == "en" and first["fields"]["prompt"] == "Pendra, Speaches"
    assert float(first["fields"]["temperature"]) == 0.2
    assert first["audio_bytes"] == up.wav_path.stat().st_size and first["filename"] == "speech.wav"
    async with up.http() as http:
        for fmt in ("text", "srt", "vtt"):
            raw = await http.post("/v1/audio/transcriptions", data={
                "model": WHISPER, "response_format": fmt},
                files={"file": ("speech.wav", up.wav_path.read_bytes(), "audio/wav")})
            assert raw.status_code == 200, raw.text
            assert raw.headers["content-type"] == "text/plain; charset=utf-8"
            assert raw.headers["x-worker-id"]


async def test_the_v1_root_serves_transcription_too(up: Up) -> None:
    async with up.api(root=True) as api:
        with up.wav_path.open("rb") as f:
            reply = await api.audio.transcriptions.create(model=WHISPER, file=f)
    assert reply.text


async def test_a_too_large_upload_is_413_and_reaches_no_worker(up: Up) -> None:
    """Past MAX_AUDIO_BYTES the upload is refused with 413 in OpenAI's shape, and Speaches never
    hears of it."""
    before = len(await up.speaches.requests("/v1/audio/transcriptions"))
    big = wav(MAX_AUDIO / 32000 + 1)
    async with up.api() as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.audio.transcriptions.create(model=WHISPER, file=("big.wav", big))
    assert caught.value.status_code == 413
    body = caught.value.response.json()
    assert body["error"]["type"] == "payload_too_large" and str(MAX_AUDIO) in body["error"]["message"]
    assert caught.value.response.headers["x-request-id"]
    assert len(await up.speaches.requests("/v1/audio/transcriptions")) == before


@pytest.mark.parametrize(("fields", "param"), [
    ({"model": WHISPER, "temperature": "5"}, "temperature"),
    ({"model": WHISPER, "temperature": "warm"}, "temperature"),
    ({"model": WHISPER, "response_format": "xml"}, "response_format"),
    ({"model": WHISPER, "language": "english please"}, "language"),
    ({"model": WHISPER, "timestamp_granularities[]": "char"}, "timestamp_granularities[]"),
    ({"model": WHISPER, "stream": "true"}, "stream"),
    ({"temperature": "0"}, "model"),
])
async def test_a_bad_field_is_400_naming_it(up: Up, fields: dict[str, str], param: str) -> None:
    before = len(await up.speaches.requests("/v1/audio/transcriptions"))
    async with up.http() as http:
        reply = await http.post("/api/v1/audio/transcriptions", data=fields,
                                files={"file": ("a.wav", up.wav_path.read_bytes(), "audio/wav")})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"].startswith(param)  # a list names its element: [0]
    assert len(await up.speaches.requests("/v1/audio/transcriptions")) == before


async def test_missing_or_misplaced_audio_is_400_naming_file(up: Up) -> None:
    async with up.http() as http:
        no_file = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER},
                                  files={"other": ("x", b"12")})
        as_text = await http.post("/api/v1/audio/transcriptions",
                                  files={"model": (None, WHISPER), "file": (None, "not a file")})
        empty = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER},
                                files={"file": ("a.wav", b"", "audio/wav")})
        as_json = await http.post("/api/v1/audio/transcriptions", json={"model": WHISPER})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "other"
    assert as_text.status_code == 400 and as_text.json()["error"]["param"] == "file"
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
    assert as_json.status_code == 415


async def test_audio_speaches_cannot_decode_is_its_415(up: Up) -> None:
    async with up.api() as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.audio.transcriptions.create(model=WHISPER,
                                                  file=("notes.wav", b"RIFF garbage " * 50))
    assert caught.value.status_code == 415
    assert "Failed to decode audio" in caught.value.response.json()["error"]["message"]


async def test_ollama_transcribes_through_its_v1_route(up: Up) -> None:
    """An audio model of Ollama 0.20+ is a transcription model: json and text through Ollama's
    /v1/audio/transcriptions; srt (which Ollama does not make) is the worker's 400."""
    audio = up.wav_path.read_bytes()
    async with up.api() as api:
        with up.wav_path.open("rb") as f:
            reply = await api.audio.transcriptions.create(model=OLLAMA_AUDIO, file=f,
                                                          language="en")
        assert reply.text.startswith("Ollama heard 7.00 seconds")
        with up.wav_path.open("rb") as f:
            text = await api.audio.transcriptions.create(model="Gemma3n-Audio", file=f,
                                                         response_format="text")
        assert text.strip() == reply.text
        with pytest.raises(openai.BadRequestError) as caught:
            await api.audio.transcriptions.create(model=OLLAMA_AUDIO, file=("a.wav", audio),
                                                  response_format="srt")
        assert "srt" in caught.value.message
    sent = [r["body"] for r in await up.ollama.requests("/v1/audio/transcriptions")]
    assert len(sent) == 2  # the srt request never left the worker
    assert sent[0]["language"] == "en" and sent[0]["file_bytes"] == len(audio)
    assert sent[1]["response_format"] == "text" and "temperature" not in sent[1]


async def test_transcriptions_leave_usage_rows(up: Up) -> None:
    """Every transcription leaves one usage row of kind transcribe: the model served, the worker,
    the status; tokens stay 0 because neither Speaches nor this Ollama reports any (never
    invented)."""
    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(up.home / "pendra.db") as db:
            return db.execute("SELECT model_served, status, prompt_tokens, completion_tokens, "
                              "worker_name FROM usage WHERE kind = 'transcribe'").fetchall()

    def served() -> list[tuple[Any, ...]]:
        found = [r for r in rows() if r[1] == 200]
        return found if {r[0] for r in found} >= {WHISPER, OLLAMA_AUDIO} else []

    found = await eventually(served, timeout_s=10, what="usage rows of both backends")
    assert all(r[2] == 0 and r[3] == 0 and r[4] for r in found)
    assert any(r[1] == 415 for r in rows())  # a refusal by Speaches is recorded too


async def _install_events(admin: httpx.AsyncClient, op_id: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(60 * WAIT):
        async with admin.stream("GET", f"/api/v1/installs/{op_id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
    return seen


async def _worker_name(up: Up) -> str:
    async with up.http() as http:
        reply = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER},
                                files={"file": ("a.wav", up.wav_path.read_bytes(), "audio/wav")})
    return reply.headers["x-worker-name"]


async def test_install_into_speaches_reports_honest_phases_then_serves(up: Up) -> None:
    """A Whisper catalogue entry installs into Speaches (POST /v1/models/{id}): the progress says
    it is downloading without byte figures Speaches never gave, then succeeded; the model is served
    at once; removing it (DELETE /v1/models/{id}) withdraws it."""
    await up.speaches.configure(download_s=1.0)
    worker = await _worker_name(up)
    async with up.admin() as admin:
        started = await admin.post("/api/v1/installs", json={"model": "whisper-small",
                                                             "worker": worker})
        assert started.status_code == 202, started.text
        assert started.json()["backend"] == "speaches"
        events = await _install_events(admin, started.json()["id"])
        assert events[-1]["state"] == "succeeded", events
        assert any("downloading" in e["status_text"] for e in events)
        assert all(e["completed"] == 0 for e in events)
        assert "Systran/faster-whisper-small" in await up.model_ids()
        posted = await up.speaches.requests("/v1/models/Systran/faster-whisper-small")
        assert [r["method"] for r in posted] == ["POST"]

        removed = await admin.delete(f"/api/v1/workers/{worker}/models/"
                                     "Systran/faster-whisper-small")
        assert removed.status_code in (200, 204), removed.text
        assert "Systran/faster-whisper-small" not in await up.model_ids()
        again = await admin.delete(f"/api/v1/workers/{worker}/models/"
                                   "Systran/faster-whisper-small")
        assert again.status_code == 404
    await up.speaches.configure(download_s=0.0)


async def test_install_failures_end_failed_with_speaches_reason(up: Up) -> None:
    worker = await _worker_name(up)
    async with up.admin() as admin:
        await up.speaches.configure(fail_downloads=True)
        try:
            started = await admin.post("/api/v1/installs", json={"model": "whisper-large-v3",
                                                                 "worker": worker})
            events = await _install_events(admin, started.json()["id"])
        finally:
            await up.speaches.configure(fail_downloads=False)
        assert events[-1]["state"] == "failed"
        assert "Speaches could not install 'Systran/faster-whisper-large-v3'" in events[-1]["error"]
        assert "Systran/faster-whisper-large-v3" not in await up.model_ids()
        # Ollama's models are not installable into Speaches, nor Whisper into a missing backend.
        wrong = await admin.post("/api/v1/installs", json={"model": "whisper-tiny.en",
                                                           "worker": "nobody"})
        assert wrong.status_code == 404


async def test_speaches_going_away_and_coming_back(up: Up) -> None:
    """Speaches stopping withdraws its models (a request is 503 with Retry-After, never a hang);
    restarted on its port, it serves again; Ollama's transcription model is untouched meanwhile."""
    await up.speaches.kill()
    await eventually(lambda: _gone(up), timeout_s=30, what="whisper withdrawn")
    assert OLLAMA_AUDIO in await up.model_ids()
    async with up.http() as http:
        reply = await http.post("/api/v1/audio/transcriptions", data={"model": WHISPER},
                                files={"file": ("a.wav", up.wav_path.read_bytes(), "audio/wav")})
    assert reply.status_code == 503 and reply.headers.get("retry-after"), reply.text
    await up.speaches.start()
    await eventually(lambda: _has(up, {WHISPER}), timeout_s=30, what="whisper back")
    async with up.api() as api:
        with up.wav_path.open("rb") as f:
            assert (await api.audio.transcriptions.create(model=WHISPER, file=f)).text


async def _gone(up: Up) -> bool:
    return WHISPER not in await up.model_ids()
