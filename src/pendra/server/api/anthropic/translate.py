"""Anthropic Messages ⇄ Pendra's internal chat, both ways, with no I/O.

Requests (``chat_body``): a validated ``MessageCreate`` becomes the internal chat body the workers
serve (OpenAI's chat shapes, server/api/chat_schema.py):

- ``system`` (a string or text blocks) is the first message, role ``system``.
- A user message's ``tool_result`` blocks become ``tool`` messages (``tool_call_id`` = the block's
  ``tool_use_id``; text blocks joined, images kept; ``is_error`` results start with ``Error:`` so
  the model can tell a failure from an answer), placed before the rest of that user message's
  text and images, which stay one ``user`` message (images as base64 data: URIs).
- An assistant message's text is its content, its ``tool_use`` blocks its ``tool_calls``
  (``input`` as JSON text), its ``thinking`` blocks its ``reasoning``; ``redacted_thinking`` is
  opaque and cannot be shown to another model, so it is left out.
- ``max_tokens`` → ``max_tokens`` (Ollama ``num_predict``); ``temperature``, ``top_p`` as they
  are; ``top_k`` and ``stop_sequences`` as Ollama ``options`` (``top_k``, ``stop``: Anthropic
  allows more than OpenAI's four stop sequences).
- ``tools`` → function tools (``input_schema`` is the parameters schema); ``tool_choice`` ``auto``
  offers them all, ``none`` none, ``tool`` only the named one (Ollama cannot force a call);
  ``disable_parallel_tool_use`` is accepted, but Ollama has no switch for it.
- ``thinking`` ``enabled`` → ``think: true`` (Ollama has no token budget: ``budget_tokens`` is
  held to Anthropic's minimum, not enforced), ``disabled`` → ``think: false``, ``adaptive`` → the model's own
  default; ``output_config.effort`` → a ``think`` level, ``output_config.format`` (or the
  structured-outputs beta's ``output_format``) → a JSON schema response format.

Answers (``message``): the internal ``chat.completion`` becomes Anthropic's message: content
blocks in the order thinking, text, tool_use (``input`` parsed, ids ``toolu_…``), the model as
the client named it, and usage in Anthropic's names.

Stop reasons: ``length`` → ``max_tokens``, ``tool_calls`` → ``tool_use``, ``stop`` →
``end_turn``. Ollama reports a stop sequence's match as a plain ``stop`` (it cuts the sequence
from the text and gives no sign of which one matched, or that one did), so ``stop_sequence`` is
never claimed: the answer says ``end_turn`` with ``stop_sequence: null``, and the text ends where
the sequence began.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pendra.server.api.anthropic.schema import (Base64Source, CountTokens, ImageBlock, InputMessage,
                                                MessageCreate, RedactedThinkingBlock, TextBlock,
                                                ThinkingAdaptive, ThinkingBlock, ThinkingDisabled,
                                                ThinkingEnabled, ToolChoiceNone, ToolChoiceTool,
                                                ToolResultBlock, ToolUseBlock)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# output_config.effort → Ollama's think levels (Ollama's own Anthropic layer maps it the same way).
EFFORT_THINK = {"low": "low", "medium": "medium", "high": "high", "xhigh": "max", "max": "max"}
ERROR_PREFIX = "Error: "


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id(internal_id: str | None) -> str:
    """Anthropic's ``toolu_…`` id for a tool call the model made (stable for a given call id, so
    the client's ``tool_result`` names the same call the conversation holds)."""
    if internal_id and internal_id.startswith("toolu_"):
        return internal_id
    suffix = (internal_id or "").removeprefix("call_") or secrets.token_hex(12)
    return "toolu_" + suffix


# --- request -------------------------------------------------------------------------------------


def _data_uri(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    assert isinstance(source, Base64Source)  # the schema refuses every other source
    return {"type": "image_url",
            "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}


def _tool_message(block: ToolResultBlock) -> dict[str, Any]:
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    for part in block.content if isinstance(block.content, list) else []:
        if isinstance(part, TextBlock):
            texts.append(part.text)
        else:
            images.append(_data_uri(part))
    text = "\n".join(texts)
    if block.is_error:
        text = ERROR_PREFIX + text
    content: str | list[dict[str, Any]] = text
    if images:
        content = ([{"type": "text", "text": text}] if text else []) + images
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _user(message: InputMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            out.append(_tool_message(block))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_data_uri(block))
        # thinking and tool_use blocks are the assistant's: a user's are ignored, as by Anthropic
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": content})
    return out


def _assistant(message: InputMessage) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name,
                                       "arguments": json.dumps(block.input, ensure_ascii=False)}})
        elif isinstance(block, RedactedThinkingBlock):
            continue
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if thinking:
        out["reasoning"] = "".join(thinking)
    if calls:
        out["tool_calls"] = calls
    return out


def _messages(body: MessageCreate | CountTokens) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(body.system, str) and body.system:
        out.append({"role": "system", "content": body.system})
    elif isinstance(body.system, list) and body.system:
        out.append({"role": "system", "content": "\n".join(b.text for b in body.system)})
    for message in body.messages:
        if message.role == "user":
            out.extend(_user(message))
        else:
            out.append(_assistant(message))
    return out


def _tools(body: MessageCreate | CountTokens) -> dict[str, Any]:
    if not body.tools:
        return {}
    tools = [{"type": "function",
              "function": {"name": t.name, **({"description": t.description}
                                              if t.description is not None else {}),
                           "parameters": t.input_schema}} for t in body.tools]
    out: dict[str, Any] = {"tools": tools}
    choice = body.tool_choice
    if isinstance(choice, ToolChoiceNone):
        out["tool_choice"] = "none"
    elif isinstance(choice, ToolChoiceTool):
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    return out


def _think(body: MessageCreate | CountTokens) -> dict[str, Any]:
    if isinstance(body.thinking, ThinkingEnabled):
        return {"think": True}
    if isinstance(body.thinking, ThinkingDisabled):
        return {"think": False}
    if body.output_config is not None and body.output_config.effort is not None:
        return {"think": EFFORT_THINK[body.output_config.effort]}
    assert body.thinking is None or isinstance(body.thinking, ThinkingAdaptive)
    return {}


def _conversation(body: MessageCreate | CountTokens) -> dict[str, Any]:
    internal: dict[str, Any] = {"model": body.model, "messages": _messages(body)}
    internal.update(_tools(body))
    internal.update(_think(body))
    fmt = (body.output_config.format if body.output_config is not None else None) \
        or body.output_format
    if fmt is not None:
        internal["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": fmt.schema_}}
    return internal


def chat_body(body: MessageCreate) -> dict[str, Any]:
    """The internal chat body for an Anthropic Messages request."""
    internal = _conversation(body)
    internal["stream"] = body.stream
    internal["max_tokens"] = body.max_tokens
    for key in ("temperature", "top_p"):
        if (value := getattr(body, key)) is not None:
            internal[key] = value
    options: dict[str, Any] = {}
    if body.top_k is not None:
        options["top_k"] = body.top_k
    if body.stop_sequences:
        options["stop"] = list(body.stop_sequences)
    if options:
        internal["options"] = options
    return internal


# Tokens a count generates: one, not zero. Ollama before 0.30 (its own Go runner) reads
# num_predict 0 as "no limit" and would generate a whole answer; with 1 every version stops after
# one token, and prompt_eval_count (the whole prompt, cached or not) is the same either way.
COUNT_NUM_PREDICT = 1


def count_body(body: CountTokens) -> dict[str, Any]:
    """The internal chat body that counts a conversation's input tokens: the same prompt, with
    one token generated (Ollama evaluates the prompt and reports its length as
    ``prompt_eval_count``)."""
    internal = _conversation(body)
    internal["stream"] = False
    internal["options"] = {"num_predict": COUNT_NUM_PREDICT}
    return internal


# --- answer --------------------------------------------------------------------------------------


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage(internal: dict[str, Any] | None) -> dict[str, int]:
    internal = internal or {}
    return {"input_tokens": int(internal.get("prompt_tokens") or 0),
            "output_tokens": int(internal.get("completion_tokens") or 0)}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``input``: its JSON-text arguments parsed (an object, as Anthropic's is)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def thinking_block(text: str) -> dict[str, Any]:
    # Anthropic signs its thinking so it can check it when sent back; Pendra's models sign
    # nothing, and an empty signature says so (it is ignored when the block comes back).
    return {"type": "thinking", "thinking": text, "signature": ""}


def message(data: dict[str, Any], model: str, msg_id: str) -> dict[str, Any]:
    """Anthropic's message for the internal ``chat.completion`` ``data``."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    internal = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = internal.get("reasoning") or internal.get("reasoning_content")
    if reasoning:
        content.append(thinking_block(reasoning))
    if text := internal.get("content"):
        content.append({"type": "text", "text": text})
    for call in internal.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")),
                        "name": fn.get("name", ""), "input": tool_input(fn.get("arguments"))})
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(choice.get("finish_reason")),
            "stop_sequence": None, "usage": usage(data.get("usage"))}
