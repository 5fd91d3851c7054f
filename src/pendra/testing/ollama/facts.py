"""Ollama's facts as the emulator states them: version gates, option types and error texts.

Every value here is copied from shared/reference/ollama-api.md (the section is named beside it) or,
where the reference is silent, read from Ollama's Go source (the file is named). Nothing is
imported from Pendra's own Ollama backend: the emulator is the yardstick that backend is measured
against, so a wrong constant there must make a test fail rather than agree with itself here.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]

# The newest stable release the reference describes (§0).
DEFAULT_VERSION = "0.32.15"

# /api/tags gained `capabilities` and details.context_length/embedding_length (§3.1, §12).
TAGS_CAPABILITIES_SINCE: Version = (0, 30, 0)
# Image generation on /api/generate: the width/height/steps fields and image/completed/total
# answers, from v0.14.3 up to (not including) v0.32.6 (§7.1, §7.2, §12).
IMAGE_GENERATION_SINCE: Version = (0, 14, 3)
IMAGE_GENERATION_UNTIL: Version = (0, 32, 6)
# `logprobs`/`top_logprobs` on generate and chat (§12); older servers ignore the unknown fields (§0).
LOGPROBS_SINCE: Version = (0, 12, 11)
# top_logprobs must lie in [0, 20] (§4.1, §10).
TOP_LOGPROBS_MAX = 20

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> Version:
    """(major, minor, patch) of "0.32.15" or "0.33.0-rc2"; a development build reports "0.0.0" (§2)."""
    match = _VERSION.match(text.strip())
    if match is None:
        return (0, 0, 0)
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def tags_have_capabilities(version: str) -> bool:
    return parse_version(version) >= TAGS_CAPABILITIES_SINCE


def has_image_generation(version: str) -> bool:
    return IMAGE_GENERATION_SINCE <= parse_version(version) < IMAGE_GENERATION_UNTIL


def has_logprobs(version: str) -> bool:
    return parse_version(version) >= LOGPROBS_SINCE


# The recognised `options` keys and their Go types (§5.1; api/types.go `Options` and `Runner`).
# Unknown keys are ignored (§5.1); the type decides how a JSON value is read (see wire.check_options).
OPTION_TYPES: dict[str, str] = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "*int",
    "use_mmap": "*bool", "num_thread": "int", "draft_num_predict": "int", "num_keep": "int",
    "seed": "int", "num_predict": "int", "top_k": "int", "top_p": "float32", "min_p": "float32",
    "typical_p": "float32", "repeat_last_n": "int", "temperature": "float32",
    "repeat_penalty": "float32", "presence_penalty": "float32", "frequency_penalty": "float32",
    "stop": "[]string",
}
# How Options.FromMap names each Go kind in its "must be of type" error (api/types.go).
OPTION_TYPE_WORDS: dict[str, str] = {"int": "integer", "*int": "integer", "float32": "float32",
                                     "bool": "boolean", "*bool": "boolean", "[]string": "array"}

# Texts, each exactly as Ollama sends it.
RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")  # §4.2, §9.4
PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the "
                   "model; shorten the prompt, adjust the context length in settings, or use a "
                   "model with a longer context length")  # §5.3
TOP_LOGPROBS_RANGE = f"top_logprobs must be between 0 and {TOP_LOGPROBS_MAX}"  # §4.1
IMAGE_MODELS_UNSUPPORTED = "image generation models are not currently supported"  # §7.1
EMBED_TOO_LONG = "the input length exceeds the context length"  # §4.3
PULL_UNKNOWN = "pull model manifest: file does not exist"  # §3.5
# Images sent to a model without the `vision` capability: Ollama hands them to llama-server, which
# has no projector (mmproj) and answers 500 with its own JSON error; Ollama relays that status and
# body text verbatim as the message (llm/llama_server.go, Chat/Completion and statusErrorMessage).
# The reference is silent on it.
NO_VISION = ('{"error":{"code":500,"message":"image input is not supported - hint: if this is '
             'unexpected, you may need to provide the mmproj","type":"server_error"}}')
THINK_VALUES = (True, False, "low", "medium", "high", "max")  # §1.3
INVALID_THINK = ('invalid think value: {value} (must be "high", "medium", "low", "max", true, '
                 'or false)')  # §1.3
RAW_CONFLICT = "raw mode does not support template, system, or context"  # §4.1
INVALID_FORMAT = 'invalid format: {value}; expected "json" or a valid JSON Schema object'  # §1.3


# POST /v1/audio/transcriptions and the `audio` capability arrived in v0.20.0 (§6.7, §12): a
# multipart form of model, file (at most 25 MB), response_format (json, text or verbose_json),
# language and prompt; run as a chat with an audio-capable model at temperature 0; the answer is
# {"text": ...}, or plain text for response_format=text. Errors on /v1 routes are OpenAI's
# envelope, type invalid_request_error for 400, not_found_error for 404 (§6.1). The reference does
# not quote the texts of the transcription route's own refusals: the emulator's are its own words.
TRANSCRIPTION_SINCE: Version = (0, 20, 0)
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
TRANSCRIPTION_MAX_BYTES = 25 << 20


def has_transcription(version: str) -> bool:
    return parse_version(version) >= TRANSCRIPTION_SINCE
