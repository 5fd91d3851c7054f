"""``ResponseCreate``: OpenAI's Responses request as Pendra accepts it.

Rules:
- The top-level fields are typed with OpenAI's types and ranges here; a body that breaks one is
  refused with 400 ``invalid_request_error`` naming the field (``temperature``,
  ``text.format.type``), before any worker is chosen. ``input`` items and ``tools`` are free-form
  JSON objects at this layer (bounded and valid Unicode, body_types.py) and are checked item by
  item in translate.py, whose errors name the exact field (``input[2].call_id``,
  ``tools[0].type``).
- What Pendra cannot do is refused rather than ignored: ``background``, ``conversation``,
  ``prompt`` (stored prompt templates). Tools follow tools.py (OpenAI's hosted tools are not
  offered to the model, a forced one is refused).
- Fields with no meaning for a self-hosted model are accepted and echoed in the response as
  OpenAI does (``user``, ``safety_identifier``, ``prompt_cache_key``, ``service_tier``,
  ``truncation``, ``text.verbosity``, ``include`` values other than logprobs), so clients such as
  Codex that always send them are served.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pendra.errors import InvalidRequest
from pendra.server.api.body_types import Body, FreeObject, ModelName, Text
from pendra.server.api.chat_schema import MAX_TOOLS, Effort, OllamaOptions

MAX_INPUT_ITEMS = 100_000  # far beyond any context window; a bound, not a policy
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_ID_CHARS = 40
# The ``include`` values OpenAI documents. Only logprobs changes what Pendra returns; the others
# concern hosted tools or encrypted reasoning, which a self-hosted model has no use for.
INCLUDABLE = ("message.output_text.logprobs", "reasoning.encrypted_content",
              "message.input_image.image_url", "computer_call_output.output.image_url",
              "code_interpreter_call.outputs", "file_search_call.results",
              "web_search_call.action.sources", "web_search_call.results")
# Fields of the OpenAI request that Pendra refuses, and why.
REFUSED = {"background": "background responses are not supported; send the request and wait "
                         "(or stream it)",
           "conversation": "conversations are not supported; continue with previous_response_id",
           "prompt": "stored prompt templates are not supported; send input and instructions"}


class TextFormat(Body):
    """``text.format``: plain text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    name: Text | None = Field(default=None, min_length=1, max_length=64)
    schema_: FreeObject | None = Field(default=None, alias="schema")
    description: Text | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise PydanticCustomError("missing", "type json_schema needs a schema")
        if self.type == "json_schema" and not self.name:
            raise PydanticCustomError("missing", "type json_schema needs a name")
        return self


class TextConfig(Body):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Body):
    effort: Effort | None = None  # type: ignore[valid-type]
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseCreate(Body):
    """OpenAI's Responses request (the fields Pendra maps; see translate.py for ``input``)."""

    model: ModelName = Field(description="A chat model: GET /models?type=chat")
    input: Text | Annotated[list[FreeObject], Field(max_length=MAX_INPUT_ITEMS)] | None = Field(
        default=None, description="Text, or a list of input items (messages, function calls and "
                                  "their outputs, reasoning)")
    instructions: Text | None = Field(default=None, description="A system message for this "
                                      "request (not carried over by previous_response_id)")
    tools: list[FreeObject] | None = Field(default=None, max_length=MAX_TOOLS,
                                           description="Function, custom and namespace tools")
    tool_choice: Literal["none", "auto", "required"] | FreeObject | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = Field(default=False, description="Answer as server-sent events")
    stream_options: FreeObject | None = None
    store: bool = Field(default=True, description="Keep the response (for previous_response_id "
                                                  "and GET /responses/{id})")
    previous_response_id: Text | None = Field(default=None, min_length=1,
                                              max_length=MAX_ID_CHARS)
    metadata: dict[Text, Text] | None = None
    include: list[Literal[INCLUDABLE]] | None = Field(  # type: ignore[valid-type]
        default=None, max_length=len(INCLUDABLE))
    user: Text | None = Field(default=None, max_length=256)
    safety_identifier: Text | None = Field(default=None, max_length=256)
    prompt_cache_key: Text | None = Field(default=None, max_length=256)
    service_tier: Text | None = Field(default=None, max_length=32)
    truncation: Literal["auto", "disabled"] | None = None
    keep_alive: Text | float | None = Field(default=None,
                                            description="How long Ollama keeps the model loaded")
    options: OllamaOptions | None = None  # type: ignore[valid-type]

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise PydanticCustomError("metadata", "at most {n} key-value pairs",
                                      {"n": MAX_METADATA_PAIRS})
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY or len(item) > MAX_METADATA_VALUE:
                raise PydanticCustomError(
                    "metadata", "keys are at most {k} characters and values at most {v}",
                    {"k": MAX_METADATA_KEY, "v": MAX_METADATA_VALUE})
        return value

    @model_validator(mode="after")
    def _nothing_refused(self) -> ResponseCreate:
        extra = self.__pydantic_extra__ or {}
        for name, why in REFUSED.items():
            if extra.get(name) not in (None, False):
                raise InvalidRequest(f"{name}: {why}", param=name)
        if self.input is None and self.previous_response_id is None:
            raise InvalidRequest("input is required", param="input")
        return self

    def wants_logprobs(self) -> bool:
        return "message.output_text.logprobs" in (self.include or [])

    def echo(self) -> dict[str, Any]:
        """The request's fields as a Response object repeats them (OpenAI's defaults filled in)."""
        text = self.text.model_dump(exclude_none=True, by_alias=True) if self.text else {}
        text.setdefault("format", {"type": "text"})
        reasoning = ({"effort": self.reasoning.effort,
                      "summary": self.reasoning.summary or self.reasoning.generate_summary}
                     if self.reasoning else {"effort": None, "summary": None})
        return {"instructions": self.instructions, "metadata": dict(self.metadata or {}),
                "parallel_tool_calls": (True if self.parallel_tool_calls is None
                                        else self.parallel_tool_calls),
                "temperature": self.temperature, "top_p": self.top_p,
                "tool_choice": _echo_tool_choice(self.tool_choice),
                "tools": [_echo_tool(t) for t in self.tools or []],
                "max_output_tokens": self.max_output_tokens,
                "previous_response_id": self.previous_response_id,
                "reasoning": reasoning, "text": text, "store": self.store,
                "truncation": self.truncation or "disabled", "user": self.user,
                "safety_identifier": self.safety_identifier,
                "prompt_cache_key": self.prompt_cache_key, "top_logprobs": self.top_logprobs,
                "service_tier": self.service_tier or "default", "background": False}


def _echo_tool_choice(choice: Any) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"].get("name")}
    return choice


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return dict(tool)
    echoed = {"type": "function", "name": tool.get("name"), "description": None,
              "parameters": None, "strict": True}
    echoed.update(tool)
    return echoed
