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
    """OpenAI's transcription request, as JSON with the audio base64-encoded."""

    model: ModelName = Field(description="A model from GET /models?type=transcription")
    file: Text = Field(min_length=1, description="The audio, base64-encoded")
    language: Text | None = Field(default=None, max_length=16)
    prompt: Text | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
