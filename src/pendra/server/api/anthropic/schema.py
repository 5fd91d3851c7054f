"""``MessageCreate`` and ``CountTokens``: Anthropic's Messages request as Pendra accepts it, typed
with Anthropic's fields and limits.

Rules:
- A body that breaks a type or a range is refused with 400 ``invalid_request_error`` naming the
  field (``messages[0].content[1].source.data``), before any worker is chosen.
- Top level: a field Anthropic does not define is refused, as Anthropic refuses it ("Extra inputs
  are not permitted"). Fields Anthropic defines that do not change what the model is asked
  (``metadata``, prompt-caching and service hints, ``context_management``) are accepted and
  ignored; ones that need something Pendra cannot run (``container``, ``mcp_servers``) are refused
  with a message saying so.
- Inside messages, blocks and tools, fields Pendra does not use (``cache_control``, ``citations``)
  are ignored: clients such as Claude Code mark blocks with them on every request.
- What Pendra cannot serve is refused, never silently dropped: image ``url`` and ``file``
  sources, ``document`` and server-tool blocks, server tools, ``tool_choice`` ``any``.
- Strings are valid Unicode and free-form values depth-bounded (body_types.py).
"""

from __future__ import annotations

import binascii
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pendra.server.api.body_types import FreeJson, FreeObject, ModelName, Text

# Bounds, not policies: far beyond any real request (Claude Code with many MCP servers sends
# hundreds of tools), so that no count is unbounded.
MAX_MESSAGES = 100_000
MAX_TOOLS = 1024
MAX_STOP_SEQUENCES = 1024
MAX_TOKENS = 2**31 - 1
# Anthropic's own rules: the smallest thinking budget, the image types, a tool's name.
MIN_THINKING_BUDGET = 1024
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"
# A bound on a tool name echoed back in the history (models' own names are short).
MAX_ECHOED_NAME = 1024


class Block(BaseModel):
    """A part of a message or a tool: fields Pendra does not use are ignored."""

    model_config = ConfigDict(extra="ignore")


class TextBlock(Block):
    type: Literal["text"]
    text: Text


class Base64Source(Block):
    type: Literal["base64"]
    media_type: Literal[MEDIA_TYPES]  # type: ignore[valid-type]
    data: Text = Field(min_length=1)

    @field_validator("data")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
        except (ValueError, binascii.Error) as exc:
            raise PydanticCustomError("base64", "image data is not valid base64") from exc
        return value


class UrlSource(Block):
    type: Literal["url"]
    url: Text

    @model_validator(mode="after")
    def _refused(self) -> UrlSource:
        raise PydanticCustomError(
            "unsupported", "image url sources are not supported: send the image inline as "
            "{\"type\": \"base64\", \"media_type\", \"data\"}")


class FileSource(Block):
    type: Literal["file"]

    @model_validator(mode="after")
    def _refused(self) -> FileSource:
        raise PydanticCustomError("unsupported", "file sources (the Files API) are not supported: "
                                                 "send the image inline as base64")


class ImageBlock(Block):
    type: Literal["image"]
    source: Annotated[Union[Base64Source, UrlSource, FileSource], Field(discriminator="type")]


class ToolUseBlock(Block):
    """A tool call in the history. Its name is not held to the tool-name pattern: it is what a
    model said, and a client must be able to send back any answer it was given."""

    type: Literal["tool_use"]
    id: Text = Field(min_length=1)
    name: Text = Field(max_length=MAX_ECHOED_NAME)
    input: FreeObject


class ToolResultBlock(Block):
    type: Literal["tool_result"]
    tool_use_id: Text = Field(min_length=1)
    content: Text | list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]] \
        | None = None
    is_error: bool | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _known_parts(cls, value: Any) -> Any:
        return _only_blocks(value, _RESULT_TYPES, "text or image (base64)")


class ThinkingBlock(Block):
    type: Literal["thinking"]
    thinking: Text
    signature: Text | None = None


class RedactedThinkingBlock(Block):
    type: Literal["redacted_thinking"]
    data: Text


ContentBlock = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                               RedactedThinkingBlock], Field(discriminator="type")]


class InputMessage(Block):
    role: Literal["user", "assistant"]
    content: Text | list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, value: Any) -> Any:
        return _only_blocks(value, _BLOCK_TYPES,
                            "text, image (base64), tool_use, tool_result or thinking")


_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "thinking",
                          "redacted_thinking"})
_RESULT_TYPES = frozenset({"text", "image"})


def _only_blocks(value: Any, known: frozenset[str], use: str) -> Any:
    """A block type Anthropic has but Pendra cannot serve (``document``, ``search_result``, ...)
    gets a message that says so, not a list of every union member that failed."""
    if isinstance(value, list):
        for block in value:
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind not in known:
                raise PydanticCustomError(
                    "unsupported", "content blocks of type '{kind}' are not supported here; "
                    "use {use}", {"kind": kind, "use": use})
    return value


class Tool(Block):
    """A client tool: its name, description and JSON schema (``type`` absent or ``custom``)."""

    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=TOOL_NAME)]
    description: Text | None = None
    input_schema: FreeObject

    @model_validator(mode="before")
    @classmethod
    def _client_tool(cls, value: Any) -> Any:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in (None, "custom"):
            raise PydanticCustomError(
                "unsupported", "server tools ('{kind}') are not supported: Pendra runs no tools "
                "itself; define the tool with name and input_schema and run it yourself",
                {"kind": kind})
        return value


class ToolChoiceAuto(Block):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Block):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _refused(self) -> ToolChoiceAny:
        raise PydanticCustomError(
            "unsupported", "tool_choice \"any\" cannot be honoured: Ollama cannot force a tool "
            "call; use \"auto\" or name the tool ({\"type\": \"tool\", \"name\": …})")


class ToolChoiceTool(Block):
    type: Literal["tool"]
    name: Annotated[str, Field(pattern=TOOL_NAME)]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Block):
    type: Literal["none"]


ToolChoice = Annotated[Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone],
                       Field(discriminator="type")]


class ThinkingEnabled(Block):
    """Extended thinking. ``budget_tokens`` is not held below ``max_tokens``: Anthropic's
    interleaved-thinking beta (whose header Pendra ignores) lets it exceed it, and Ollama has no
    budget to enforce anyway."""

    type: Literal["enabled"]
    budget_tokens: int = Field(ge=MIN_THINKING_BUDGET, le=MAX_TOKENS)


class ThinkingDisabled(Block):
    type: Literal["disabled"]


class ThinkingAdaptive(Block):
    type: Literal["adaptive"]


Thinking = Annotated[Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive],
                     Field(discriminator="type")]


class JsonOutputFormat(Block):
    type: Literal["json_schema"]
    schema_: FreeObject = Field(alias="schema")


class OutputConfig(Block):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class Metadata(Block):
    user_id: Text | None = Field(default=None, max_length=256)


class _Request(BaseModel):
    """What ``messages`` and ``count_tokens`` share: the conversation and how to answer it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: ModelName = Field(description="A chat model: GET /v1/models?type=chat")
    messages: list[InputMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: Text | list[TextBlock] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = Field(
        default=None, description="The structured-outputs beta's name for output_config.format")
    # Accepted and ignored: hints about caching, routing and service that change nothing here.
    cache_control: FreeJson = None
    context_management: FreeJson = None
    diagnostics: FreeJson = None
    inference_geo: FreeJson = None
    speed: FreeJson = None

    @model_validator(mode="before")
    @classmethod
    def _runnable(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in ("container", "mcp_servers"):
                if value.get(key) not in (None, [], {}):
                    raise PydanticCustomError(
                        "unsupported", "{key} is not supported: Pendra runs no code or MCP "
                        "servers itself", {"key": key})
            value = {k: v for k, v in value.items() if k not in ("container", "mcp_servers")}
        return value

    @model_validator(mode="after")
    def _tool_named(self) -> _Request:
        if isinstance(self.tool_choice, ToolChoiceTool):
            names = {t.name for t in self.tools or []}
            if self.tool_choice.name not in names:
                raise PydanticCustomError(
                    "unknown_tool", "tool_choice names '{name}', which is not among the tools",
                    {"name": self.tool_choice.name})
        return self


class MessageCreate(_Request):
    """Anthropic's ``POST /v1/messages`` body."""

    max_tokens: int = Field(ge=1, le=MAX_TOKENS, description="Most tokens to generate")
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    stop_sequences: list[Text] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None


class CountTokens(_Request):
    """Anthropic's ``POST /v1/messages/count_tokens`` body."""
