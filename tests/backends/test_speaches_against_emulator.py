"""The Speaches backend against the Speaches emulator and a vLLM-shaped impostor, over real
sockets; and the emulator's shapes checked with the official openai SDK."""

from __future__ import annotations

import io
import wave

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from pendra.backends.base import InstallProgress, ModelInfo
from pendra.backends.registry import SPEACHES_PROBES, BackendRegistry
from pendra.backends.speaches import SpeachesBackend
from pendra.config import WorkerSettings
from pendra.errors import BackendRejected, BackendUnavailable, InstallFailed, ModelNotFound, UnsupportedOperation
from pendra.protocol.transcription import TranscriptionJob, job_body
from pendra.testing.servers import free_port, run_speaches

WHISPER = "Systran/faster-whisper-tiny.en"


def wav(seconds: float = 2.0, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x01\x00" * int(seconds * rate))
    return out.getvalue()


def settings(speaches: str, ollama: str) -> WorkerSettings:
    return WorkerSettings(server_ws_url="ws://127.0.0.1:1", private_key="", worker_id="wrk-t",
                          worker_name="t", models=None, max_concurrent=1, ollama_endpoint=ollama,
                          refresh_interval_s=10, ollama_num_ctx_cap=0, heartbeat_interval_s=5,
                          heartbeat_timeout_s=15, speaches_endpoint=speaches)


async def test_speaches_is_verified_by_its_own_endpoints_and_an_impostor_is_not() -> None:
    """On the same kind of port, Speaches verifies (version from its OpenAPI document) and a
    vLLM-shaped server does not, with the reason; a dead port is 'not reachable'."""
    async with run_speaches(models=[WHISPER, "speaches-ai/Kokoro-82M-v1.0-ONNX"]) as real, \
            run_speaches(impostor=True) as fake:
        backend = SpeachesBackend()
        try:
            status = await backend.verify(fake.base_url)
            assert not status.verified and "/health" in status.reason
            dead = await backend.verify(f"http://127.0.0.1:{free_port()}")
            assert not dead.verified and "not reachable" in dead.reason
            status = await backend.verify(real.base_url)
            assert status.verified and status.version == "0.8.3"
            assert set(status.capabilities) == {"transcribe", "install", "uninstall"}
            [model] = await backend.list_models()  # the speech-synthesis model is not offered
            assert model.id == WHISPER and model.types == ("transcription",)
            assert model.family == "whisper" and model.modified_at.endswith("Z")
        finally:
            await backend.aclose()


async def test_the_registry_finds_speaches_beside_a_dead_ollama() -> None:
    async with run_speaches(models=[WHISPER]) as real:
        registry = BackendRegistry(settings(real.base_url, f"http://127.0.0.1:{free_port()}"))
        try:
            assert await registry.refresh()
            [status] = [s for s in registry.statuses() if s.kind == "speaches"]
            assert status.verified and status.tried == (real.base_url,)
            backend, model = registry.backend_for(WHISPER)
            assert backend.kind == "speaches" and model.backend == "speaches"
        finally:
            await registry.aclose()
    assert SPEACHES_PROBES == ("http://localhost:8000", "http://host.docker.internal:8000")


async def test_transcribe_install_and_uninstall_through_the_backend() -> None:
    async with run_speaches(models=[WHISPER]) as real:
        backend = SpeachesBackend()
        try:
            assert (await backend.verify(real.base_url)).verified
            model = ModelInfo(id=WHISPER, backend="speaches", capabilities=("audio",))
            job = TranscriptionJob(model=WHISPER, audio=wav(), filename="a.wav",
                                   content_type="audio/wav", response_format="verbose_json")
            answer, usage = await backend.transcribe(model, job_body(job))
            assert answer["json"]["duration"] == 2.0 and usage.total_tokens == 0
            text, _ = await backend.transcribe(model, job_body(TranscriptionJob(
                model=WHISPER, audio=wav(), filename="a.wav", content_type="audio/wav",
                response_format="vtt")))
            assert text["text"].startswith("WEBVTT")
            with pytest.raises(BackendRejected) as caught:
                await backend.transcribe(model, job_body(TranscriptionJob(
                    model=WHISPER, audio=b"ID3 not a wav", filename="a.mp3",
                    content_type="audio/mpeg")))
            assert caught.value.status == 415 and "Failed to decode audio" in caught.value.message
            with pytest.raises(UnsupportedOperation):
                await backend.chat(model, {})

            seen: list[InstallProgress] = []
            await backend.install("Systran/faster-whisper-small", seen.append)
            assert [p.status.split(" ")[0] for p in seen] == ["downloading", "success"]
            assert all(p.completed == 0 and p.total == 0 for p in seen)
            await backend.install("Systran/faster-whisper-small", seen.append)  # 201: already there
            with pytest.raises(InstallFailed, match="not found") as missing:
                await backend.install("nobody/no-such-model", seen.append)
            assert missing.value.status == 404
            with pytest.raises(InstallFailed, match="gated repository") as gated:
                await backend.install("gated-org/faster-whisper-private", seen.append)
            assert gated.value.status == 401
            assert "Systran/faster-whisper-small" in {m.id for m in await backend.list_models()}
            await backend.uninstall("Systran/faster-whisper-small")
            with pytest.raises(ModelNotFound):
                await backend.uninstall("Systran/faster-whisper-small")
            await real.kill()
            with pytest.raises(BackendUnavailable):
                await backend.transcribe(model, job_body(job))
        finally:
            await backend.aclose()


async def test_the_emulator_speaks_openai_to_the_official_sdk() -> None:
    """The emulator's transcription and model-list shapes parse as the openai SDK's own types, its
    errors are FastAPI's, and the audio container really is checked."""
    async with run_speaches(models=[WHISPER]) as real:
        async with AsyncOpenAI(base_url=real.base_url + "/v1", api_key="unused",
                               max_retries=0) as api:
            [listed] = [m async for m in api.models.list()]
            assert listed.id == WHISPER and listed.owned_by == "Systran"
            assert (listed.model_extra or {})["task"] == "automatic-speech-recognition"
            plain = await api.audio.transcriptions.create(model=WHISPER, file=("a.wav", wav(6)))
            verbose = await api.audio.transcriptions.create(
                model=WHISPER, file=("a.wav", wav(6)), response_format="verbose_json",
                timestamp_granularities=["word"])
            assert verbose.text == plain.text and len(verbose.segments or []) == 2
            assert verbose.words and verbose.language == "en"
            srt = await api.audio.transcriptions.create(model=WHISPER, file=("a.wav", wav(6)),
                                                        response_format="srt")
            assert srt.startswith("1\n00:00:00,000 --> 00:00:05,000\n")
            other = await api.audio.transcriptions.create(model=WHISPER,
                                                          file=("b.wav", wav(6, rate=8000)))
            assert other.text != plain.text  # different bytes, different words
            with pytest.raises(openai.APIStatusError) as bad:
                await api.audio.transcriptions.create(model=WHISPER, file=("a.wav", b"RIFF...."))
            assert bad.value.status_code == 415
            with pytest.raises(openai.NotFoundError) as absent:
                await api.audio.transcriptions.create(model="Systran/faster-whisper-small",
                                                      file=("a.wav", wav()))
            assert "not installed locally" in absent.value.body["detail"]  # type: ignore[index]
        async with httpx.AsyncClient(base_url=real.base_url) as http:
            missing = await http.post("/v1/audio/transcriptions", data={"model": WHISPER})
            assert missing.status_code == 422
            assert missing.json()["detail"][0]["loc"] == ["body", "file"]
            assert (await http.get("/health")).json() == {"message": "OK"}
            created = await http.post("/v1/models/Systran/faster-whisper-small")
            assert (created.status_code, created.text) == (
                200, "Model 'Systran/faster-whisper-small' downloaded")
            deleted = await http.delete("/v1/models/Systran/faster-whisper-small")
            assert deleted.json() == {"detail": "Model 'Systran/faster-whisper-small' deleted"}
