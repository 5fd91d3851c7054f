"""Speaches' facts as the emulator states them: routes, shapes, statuses and error texts.

Every value is read from Speaches' source (speaches-ai/speaches at 870e1e1; the file is named
beside it). Nothing is imported from Pendra's Speaches backend: the emulator is the yardstick that
backend is measured against.
"""

from __future__ import annotations

# FastAPI(title="Speaches", version="0.8.3") — src/speaches/main.py; uvicorn's port 8000 is its
# default (config.py: UVICORN_PORT, default 8000).
TITLE = "Speaches"
VERSION = "0.8.3"
DEFAULT_PORT = 8000

# GET /health -> 200 {"message": "OK"}, public even when an API key is set (routers/misc.py).
HEALTH_BODY = {"message": "OK"}

# api_types.py: ModelTask.
TASKS = ("automatic-speech-recognition", "text-to-speech", "speaker-embedding",
         "voice-activity-detection", "speaker-diarization")
ASR_TASK = "automatic-speech-recognition"

# routers/stt.py: ResponseFormat and its default.
RESPONSE_FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
DEFAULT_RESPONSE_FORMAT = "json"
# executors/whisper.py segments_to_transcription_response: media type of each text answer.
TEXT_MEDIA_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}
# api_types.py TIMESTAMP_GRANULARITIES_COMBINATIONS.
TIMESTAMP_GRANULARITIES = ([], ["segment"], ["word"], ["word", "segment"], ["segment", "word"])

# dependencies.py audio_file_dependency: what PyAV's failures become.
UNDECODABLE_STATUS = 415
UNDECODABLE_DETAIL = "Failed to decode audio. The provided file type is not supported."
EMPTY_STATUS = 400
EMPTY_DETAIL = "Failed to decode audio. The provided file is likely empty."
# audio/pcm and audio/raw are read as signed 16-bit little-endian mono (dependencies.py).
RAW_PCM_TYPES = ("audio/pcm", "audio/raw")
# Everything is resampled to 16 kHz mono before the model sees it.
SAMPLE_RATE = 16000


def not_installed(model_id: str) -> str:
    """routers/utils.py get_model_card_data_or_raise: 404."""
    return (f"Model '{model_id}' is not installed locally. You can download the model using "
            "`POST /v1/models`")


def not_found(model_id: str) -> str:
    """routers/models.py: 404 from GET /v1/models/{id} and from POST for an unknown id."""
    return f"Model '{model_id}' not found"


def downloaded(model_id: str) -> str:
    """routers/models.py download_remote_model: 200, plain text body."""
    return f"Model '{model_id}' downloaded"


def already_exists(model_id: str) -> str:
    """routers/models.py download_remote_model: 201, plain text body."""
    return f"Model '{model_id}' already exists"


def deleted(model_id: str) -> dict[str, str]:
    """routers/models.py delete_model: 200 JSON."""
    return {"detail": f"Model '{model_id}' deleted"}


def repo_not_found(model_id: str) -> str:
    """hf_utils.py delete_local_model_repo: FileNotFoundError -> 404 with its text."""
    return f"Model repo not found: {model_id}"


def gated(model_id: str) -> str:
    """routers/models.py: a gated Hugging Face repository without HF_TOKEN -> 401."""
    return (f"Model '{model_id}' is a gated repository and requires authentication. Set the "
            "HF_TOKEN environment variable to a valid Hugging Face token with access to this "
            "model.")


def srt_timestamp(ts: float) -> str:
    """text_utils.py srt_format_timestamp: HH:MM:SS,mmm."""
    hours, minutes, seconds = ts // 3600, (ts % 3600) // 60, ts % 60
    return f"{int(hours):02d}:{int(minutes):02d}:{int(seconds):02d},{int((ts * 1000) % 1000):03d}"


def vtt_timestamp(ts: float) -> str:
    """text_utils.py vtt_format_timestamp: HH:MM:SS.mmm."""
    return srt_timestamp(ts).replace(",", ".")


def srt_cue(text: str, start: float, end: float, i: int) -> str:
    """text_utils.py format_as_srt."""
    return f"{i + 1}\n{srt_timestamp(start)} --> {srt_timestamp(end)}\n{text}\n\n"


def vtt_cue(text: str, start: float, end: float, i: int) -> str:
    """text_utils.py format_as_vtt: the first cue starts at 0 and carries the WEBVTT header."""
    start = start if i > 0 else 0.0
    cue = f"{vtt_timestamp(start)} --> {vtt_timestamp(end)}\n{text}\n\n"
    return f"WEBVTT\n\n{cue}" if i == 0 else cue
