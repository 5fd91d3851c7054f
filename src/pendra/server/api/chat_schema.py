"""``ChatCompletionCreate``: OpenAI's chat request as Pendra accepts it, every field Pendra maps
typed with OpenAI's types and ranges.

Rules:
- A body that breaks a type or range here is refused with 400 ``invalid_request_error`` whose
  ``param`` names the field (``messages[0].content``, ``stop``, ``temperature``,
  ``options.num_ctx``), before any worker is chosen; this model is also the request schema in the
  OpenAPI document.
- Strings must be valid Unicode and free-form parts are depth-bounded (see body_types.py). Fields
  Pendra does not map pass through to the worker, held to the same rules.
- Ollama's ``options`` is a documented extra, typed from the one table in
  ``pendra.backends.ollama.options``.
- What Pendra cannot do is refused rather than ignored: ``n`` above 1, content parts other than
  text and images.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pendra.backends.ollama.options import OPTIONS, OptionSpec
from pendra.backends.ollama.translate import THINK_LEVELS, offered_tools
from pendra.server.api.body_types import Body, FreeObject, ModelName, Text

# OpenAI's limits on the request, kept so a client learns of them here and not from a worker.
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MAX_MESSAGES = 100_000  # far beyond any context window; a bound, not a policy
INT64 = Field(ge=-(2**63), le=2**63 - 1)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Effort = Literal[tuple(THINK_LEVELS)]  # type: ignore[valid-type]


class ImageUrl(Body):
    url: Text = Field(description="A base64 data: URI (data:image/png;base64,...)")
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(Body):
    """One part of a message's content: text, or an image as a base64 data: URI."""

    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: ImageUrl | None = None

    @model_validator(mode="after")
    def _has_its_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise PydanticCustomError("missing", "a text part needs `text`")
        if self.type == "image_url" and self.image_url is None:
            raise PydanticCustomError("missing", "an image_url part needs `image_url`")
        return self


class FunctionCall(Body):
    name: Text = Field(min_length=1)
    arguments: Text | FreeObject = Field(default="{}",
                                          description="JSON text of the arguments (or an object)")

    @field_validator("arguments")
    @classmethod
    def _arguments_are_json(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and value:
            try:
                json.loads(value)
            except ValueError as exc:
                raise PydanticCustomError("arguments_not_json",
                                          "tool call arguments are not valid JSON") from exc
        return value


class ToolCall(Body):
    id: Text | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    """One message. ``content`` is text, a list of parts, or null (an assistant's tool call)."""

    role: Role
    content: Text | list[ContentPart] | None = None
    name: Text | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: Text | None = None
    reasoning: Text | None = Field(default=None, description="An earlier answer's thinking")
    reasoning_content: Text | None = None


class FunctionDef(Body):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Text | None = None
    parameters: FreeObject | None = Field(default=None, description="A JSON schema")
    strict: bool | None = None


class Tool(Body):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(Body):
    include_usage: bool | None = None


class JsonSchemaFormat(Body):
    name: Text = Field(min_length=1, max_length=64)
    description: Text | None = None
    schema_: FreeObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None
                                           or self.json_schema.schema_ is None):
            raise PydanticCustomError("missing", "type json_schema needs json_schema.schema")
        return self


class Reasoning(Body):
    effort: Effort | None = None  # type: ignore[valid-type]


def _option_field(spec: OptionSpec) -> tuple[Any, Any]:
    if spec.kind == "stops":
        return list[Text] | None, Field(default=None, description=spec.description)
    kind: Any = spec.kind
    return kind | None, Field(default=None, ge=spec.minimum, le=spec.maximum,
                              description=spec.description or None)


OllamaOptions = create_model(  # type: ignore[call-overload]
    "OllamaOptions", __base__=Body, __doc__="Ollama's model options (passed to the model as "
    "they are; they win over the OpenAI fields they overlap).",
    **{name: _option_field(spec) for name, spec in OPTIONS.items()})


class ChatCompletionCreate(Body):
    """OpenAI's chat request (Pendra maps the fields below to Ollama; others pass through)."""

    model: ModelName = Field(description="A chat model: GET /models?type=chat")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES,
                                        description="The conversation, oldest first")
    stream: bool = Field(default=False, description="Answer as server-sent events")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: Annotated[int, INT64] | None = None
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP_SEQUENCES)] | None = Field(
        default=None, description="A stop sequence, or up to 4")
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 choice is supported")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | FreeObject | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Effort | None = None  # type: ignore[valid-type]
    reasoning: Reasoning | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = Field(
        default=None, description="Ollama's own switch for thinking")
    keep_alive: Text | float | None = Field(default=None,
                                            description="How long Ollama keeps the model loaded")
    user: Text | None = Field(default=None, max_length=256)
    options: OllamaOptions | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _tool_choice_can_be_honoured(self) -> "ChatCompletionCreate":
        # The worker's rule (translate.offered_tools), applied before a worker is chosen; its
        # InvalidRequest names tool_choice and becomes the 400 as it is.
        if self.tool_choice is not None:
            offered_tools([t.model_dump() for t in self.tools or []], self.tool_choice)
        return self
