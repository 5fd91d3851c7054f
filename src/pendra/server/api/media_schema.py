"""``EmbeddingCreate``, ``ImageCreate`` and ``TranscriptionCreate``: OpenAI's embeddings, image and
transcription requests as Pendra accepts them, with OpenAI's types and ranges.

The rules of chat_schema.py hold here too: a broken field is 400 with ``param`` naming it before
any worker is chosen, strings are valid Unicode, other fields pass through bounded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from pendra.server.api.body_types import Body, ModelName, Text

# OpenAI's bounds on one embeddings request.
MAX_EMBEDDING_INPUTS = 2048
MAX_TOKEN_ID = 2**31 - 1
# Image sides Pendra passes on (a model refuses what it cannot draw; this only bounds the numbers).
IMAGE_SIZE_PATTERN = r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$"
# An ISO 639-1 code (Whisper's), optionally with a region: en, cy, pt-BR.
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$"
# Whisper reads at most 224 tokens of prompt; this bounds the characters generously.
MAX_PROMPT_CHARS = 4096

TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
NonEmptyText = Annotated[Text, Field(min_length=1)]


class EmbeddingCreate(Body):
    """OpenAI's embeddings request."""

    model: ModelName = Field(description="An embedding model: GET /models?type=embedding")
    input: (NonEmptyText
            | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
            | Annotated[list[TokenId], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
            | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]],
                        Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]) = Field(
        description="Text (or token arrays) to embed; one vector per item, in order")
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    encoding_format: Literal["float", "base64"] | None = None
    user: Text | None = Field(default=None, max_length=256)


class ImageCreate(Body):
    """OpenAI's image generation request. The images come back inline (``b64_json``): Pendra
    hosts no files, so ``response_format: "url"`` is refused rather than answered otherwise. ``n``
    images are ``n`` generations on one worker."""

    model: ModelName = Field(description="An image model: GET /models?type=image")
    prompt: Text = Field(min_length=1, max_length=32000)
    size: Annotated[str, Field(pattern=IMAGE_SIZE_PATTERN)] | None = Field(
        default=None, description="WIDTHxHEIGHT (e.g. 1024x1024) or auto")
    n: int | None = Field(default=None, ge=1, le=10, description="How many images (1–10)")
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="b64_json (the default); url is refused: Pendra hosts no files")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: Text | None = Field(default=None, max_length=256)

    @field_validator("response_format")
    @classmethod
    def _inline_only(cls, value: str | None) -> str | None:
        if value == "url":
            raise ValueError("Pendra returns images inline only: use \"b64_json\" (or leave "
                             "response_format out); it hosts no files to link to")
        return value


class TranscriptionCreate(Body):
    """OpenAI's transcription request: the text fields of its multipart form (the ``file`` part is
    read by server/api/upload.py). Form values arrive as text and are read as these types;
    unknown text fields pass through to the backend (Speaches knows ``hotwords``, say)."""

    model: ModelName = Field(description="A model from GET /models?type=transcription")
    language: Annotated[Text, Field(pattern=LANGUAGE_PATTERN)] | None = Field(
        default=None, description="The audio's language, ISO 639-1 (e.g. en, cy)")
    prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                                description="Text to guide the style or spell names")
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = Field(
        default=None, description="json (the default), text, srt, verbose_json or vtt")
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]], Field(max_length=2)] | None = Field(
        default=None, alias="timestamp_granularities[]",
        description="word and/or segment timestamps (with verbose_json)")
    stream: bool | None = Field(default=None, description="Streaming is not supported: false")

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("streamed transcription is not supported; leave stream out or "
                             "false to get the whole answer")
        return value
