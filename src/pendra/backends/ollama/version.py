"""Ollama version strings ("0.32.15", "0.33.0-rc2", "0.0.0") and the features that depend on them.

The adapter reads what the server reports rather than assuming the newest release.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]

# /api/generate image generation: added in v0.14.3, removed in v0.32.6 (reference §7, §12).
IMAGE_GENERATION_SINCE: Version = (0, 14, 3)
IMAGE_GENERATION_UNTIL: Version = (0, 32, 6)
# `logprobs`/`top_logprobs` on /api/chat and /api/generate: since v0.12.11 (reference §12); older
# servers ignore the fields and answer without them.
LOGPROBS_SINCE: Version = (0, 12, 11)
# /v1/audio/transcriptions and the `audio` model capability: added in v0.20.0 (reference §6.7, §12).
TRANSCRIPTION_SINCE: Version = (0, 20, 0)
# /api/tags gained `capabilities` and details.context_length in v0.30.0.
TAGS_CAPABILITIES_SINCE: Version = (0, 30, 0)

_PATTERN = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> Version | None:
    """(major, minor, patch) of an Ollama version; a pre-release counts as its release."""
    match = _PATTERN.match(text.strip())
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def has_image_generation(version: str) -> bool:
    parsed = parse_version(version)
    return parsed is not None and IMAGE_GENERATION_SINCE <= parsed < IMAGE_GENERATION_UNTIL


def has_logprobs(version: str) -> bool:
    parsed = parse_version(version)
    return parsed is not None and parsed >= LOGPROBS_SINCE


def has_transcription(version: str) -> bool:
    parsed = parse_version(version)
    return parsed is not None and parsed >= TRANSCRIPTION_SINCE


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)
