"""``CompletionCreate``: OpenAI's legacy Completions request as Pendra accepts it, every field
Pendra maps typed with OpenAI's types and ranges.

Rules:
- As for chat (chat_schema.py): a body that breaks a type or range is refused with 400
  ``invalid_request_error`` whose ``param`` names the field, before any worker is chosen; strings
  must be valid Unicode and free-form parts are depth-bounded (body_types.py); fields Pendra does
  not map pass through to the worker, held to the same rules; Ollama's ``options`` is typed from
  the one options table. This model is also the request schema in the OpenAPI document.
- ``prompt`` is a string or a list of strings; every prompt is served, ``n`` times each (prompts ×
  ``best_of``, default ``n``, at most ``MAX_CHOICES``). Token-id prompts are refused (Ollama
  takes text).
- What cannot be served is refused rather than ignored, by the worker's own rules
  (backends/ollama/completion.py) applied here first: ``best_of`` below ``n`` (or above it and
  streamed), ``logit_bias``, ``echo`` with ``logprobs``, ``suffix`` with ``raw: true``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from pendra.backends.ollama.completion import MAX_CHOICES, MAX_LOGPROBS, generate_requests
from pendra.server.api.body_types import Body, FreeObject, ModelName, Text
from pendra.server.api.chat_schema import (INT64, MAX_STOP_SEQUENCES, OllamaOptions,
                                           StreamOptions)

# Longest list of prompts: each is one generation (times n), so the bound is the choices'.
MAX_PROMPTS = MAX_CHOICES


class CompletionCreate(Body):
    """OpenAI's legacy completions request: the prompt is sent as written, with no chat
    template (a ``suffix`` asks for fill-in-the-middle through the model's own template)."""

    model: ModelName = Field(description="A model served for chat/generation: GET /models?type=chat")
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        description="The prompt, or a list of prompts (each is served)")
    suffix: Text | None = Field(default=None, description="Text after the insertion point "
                                "(fill-in-the-middle; the model needs Ollama's `insert` "
                                "capability)")
    max_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                   description="Tokens to generate per choice (default 16)")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: Annotated[int, INT64] | None = None
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP_SEQUENCES)] | None = Field(
        default=None, description="A stop sequence, or up to 4")
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES,
                          description="Choices per prompt (generated one after the other)")
    best_of: int | None = Field(default=None, ge=1, le=MAX_CHOICES,
                                description="Generations per prompt, of which the n with the "
                                "highest log probability per token are returned (not streamed)")
    echo: bool | None = Field(default=None, description="Return the prompt before the completion")
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS,
                                 description="Log probabilities of each token and this many "
                                             "alternatives")
    logit_bias: FreeObject | None = Field(default=None, description="Not supported when "
                                          "non-empty (Ollama has no token bias)")
    stream: bool = Field(default=False, description="Answer as server-sent events")
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=256)
    raw: bool | None = Field(default=None, description="Pendra's extra: false applies the "
                             "model's template to the prompt (default: true, the prompt as "
                             "written; false with a suffix)")
    keep_alive: Text | float | None = Field(default=None,
                                            description="How long Ollama keeps the model loaded")
    options: OllamaOptions | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _can_be_served(self) -> "CompletionCreate":
        # The worker's rules (completion.generate_requests), applied before a worker is chosen;
        # its InvalidRequest names the field and becomes the 400 as it is. The model's own
        # capabilities (insert for a suffix) are the worker's to check.
        generate_requests(self.model_dump(exclude_unset=True, by_alias=True), self.model,
                          num_ctx=None)
        return self
