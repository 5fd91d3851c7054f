"""Responses ⇄ internal chat, both ways, with no I/O.

Rules:
- Request: ``instructions`` becomes the first (system) message, then the history a
  ``previous_response_id`` brought (its input items and its output items, in order), then this
  request's ``input``. Items map to chat messages: a ``message`` (``input_text``/``output_text``/
  ``refusal`` parts as text, ``input_image`` as an image part) to a message of its role
  (``developer`` stays developer; the worker maps it to system); ``function_call`` items to the
  assistant's ``tool_calls`` (consecutive calls join one assistant message, after its text);
  ``function_call_output`` to a ``tool`` message; a ``reasoning`` item's summary/content text to
  the next assistant message's ``reasoning`` (encrypted content is Pendra's own null: nothing to
  decrypt); ``custom_tool_call`` items and their outputs as tool calls and results (tools.py).
  Anything else is refused with 400 naming the item's field (``input[3].type``).
- ``tools`` and ``tool_choice`` are tools.py's: function, custom and namespace tools become chat
  tools, hosted ones are not offered, and ``tool_choice`` follows the worker's one rule
  (``offered_tools``). ``text.format`` becomes ``response_format``, ``reasoning.effort``
  ``reasoning_effort``, ``max_output_tokens`` ``max_completion_tokens``,
  ``include: ["message.output_text.logprobs"]`` ``logprobs`` (with ``top_logprobs``).
- Answer: a ``chat.completion`` becomes the Response's ``output``: a ``reasoning`` item (its
  thinking as summary text) when the model thought, a ``message`` with one ``output_text`` part
  when it said anything (or called nothing), one ``function_call`` (or ``custom_tool_call``)
  item per tool call. A ``length`` finish is ``status: "incomplete"`` with
  ``incomplete_details.reason: "max_output_tokens"``. Usage is input/output/total tokens (output
  includes thinking; Ollama does not count it apart, so ``reasoning_tokens`` is 0 and cached
  tokens are 0).
"""

from __future__ import annotations

import secrets
from typing import Any

from pendra.backends.ollama.translate import offered_tools
from pendra.errors import InvalidRequest
from pendra.server.api.responses import tools
from pendra.server.api.responses.schema import ResponseCreate

MESSAGE_ROLES = ("user", "system", "developer", "assistant")


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: ``resp_…``, ``msg_…``, ``fc_…``, ``rs_…``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string", param=where)
    return value


# --- items ---------------------------------------------------------------------------------------


def input_items(raw: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """This request's ``input`` as a list of items (a string is one user message)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": raw}]}]
    return [dict(item) for item in raw]


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` as they are stored and listed: each with an ``id`` (and a ``type``)."""
    prefixes = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                "custom_tool_call": "ctc", "custom_tool_call_output": "ctco", "reasoning": "rs"}
    out = []
    for item in items:
        kind = item.get("type") or "message"
        item = {"type": kind, **item}
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = new_id(prefixes.get(kind, "item"))
        out.append(item)
    return out


def _parts(content: Any, role: str, where: str) -> str | list[dict[str, Any]]:
    """A message item's content as chat content (a string, or text and image parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content parts", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _text(part.get("text"), f"{at}.text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part.get("refusal"), f"{at}.refusal")})
        elif kind == "input_image":
            if part.get("file_id") is not None:
                raise InvalidRequest(f"{at}.file_id: uploaded files are not supported; send "
                                     "image_url as a base64 data: URI", param=f"{at}.file_id")
            url = _text(part.get("image_url"), f"{at}.image_url")
            if not url.startswith("data:"):
                raise InvalidRequest(f"{at}.image_url must be a base64 data: URI "
                                     "(data:image/png;base64,...); image URLs are not fetched",
                                     param=f"{at}.image_url")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("auto", "low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            raise InvalidRequest(f"{at}: input_file parts are not supported; send the file's "
                                 "text as input_text", param=f"{at}.type")
        else:
            raise InvalidRequest(f"{at}.type: unsupported content part type {kind!r} (use "
                                 "input_text, input_image or output_text)", param=f"{at}.type")
        if kind == "input_image" and role == "assistant":
            raise InvalidRequest(f"{at}: an assistant message cannot carry an image",
                                 param=f"{at}.type")
    return parts


def _reasoning_text(item: dict[str, Any], where: str) -> str:
    texts = []
    for key in ("summary", "content"):
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise InvalidRequest(f"{where}.{key} must be a list", param=f"{where}.{key}")
        for j, part in enumerate(value):
            if not isinstance(part, dict):
                raise InvalidRequest(f"{where}.{key}[{j}] must be an object",
                                     param=f"{where}.{key}[{j}]")
            texts.append(_text(part.get("text"), f"{where}.{key}[{j}].text"))
    return "\n".join(t for t in texts if t)


def _tool_output(value: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _parts(value, "tool", where)
    raise InvalidRequest(f"{where} must be a string or a list of content parts", param=where)


def chat_messages(instructions: str | None, items: list[dict[str, Any]],
                  first_index: int = 0) -> list[dict[str, Any]]:
    """The chat messages for ``instructions`` and ``items``; ``first_index`` is the index of
    ``items[0]`` in the request's ``input`` (history items come before it and are named by their
    place in the stored conversation)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    thinking: list[str] = []
    for i, item in enumerate(items):
        where = f"input[{i - first_index}]" if i >= first_index else f"history[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in MESSAGE_ROLES:
                raise InvalidRequest(f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}",
                                     param=f"{where}.role")
            message: dict[str, Any] = {"role": role,
                                       "content": _parts(item.get("content"), role,
                                                         f"{where}.content")}
            if role == "assistant" and thinking:
                message["reasoning"] = "\n".join(thinking)
                thinking = []
            messages.append(message)
        elif kind in ("function_call", "custom_tool_call"):
            call = tools.history_call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not thinking:
                last.setdefault("tool_calls", []).append(call)
            else:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                if thinking:
                    message["reasoning"] = "\n".join(thinking)
                    thinking = []
                messages.append(message)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = _text(item.get("call_id"), f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": _tool_output(item.get("output"), f"{where}.output")})
        elif kind == "reasoning":
            if text := _reasoning_text(item, where):
                thinking.append(text)
        else:
            raise InvalidRequest(f"{where}.type: unsupported input item type {kind!r} (use "
                                 "message, function_call, function_call_output, "
                                 "custom_tool_call, custom_tool_call_output or reasoning)",
                                 param=f"{where}.type")
    return messages


# --- the request ---------------------------------------------------------------------------------


def chat_body(request: ResponseCreate, history: list[dict[str, Any]],
              items: list[dict[str, Any]], offered: tools.ToolMap) -> dict[str, Any]:
    """The internal chat body for ``request``, after ``history`` (a stored conversation), with
    ``offered`` (``tools.tool_map`` of the request's tools)."""
    messages = chat_messages(request.instructions, [*history, *items], first_index=len(history))
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("input has no message to answer", param="input")
    body: dict[str, Any] = {"model": request.model, "messages": messages,
                            "stream": request.stream}
    choice, chat_tools = tools.chat_tool_choice(request.tool_choice, offered)
    offered_tools(chat_tools, choice)  # the worker's rule, applied before a worker is chosen
    if chat_tools:
        body["tools"] = chat_tools
    if choice is not None:
        body["tool_choice"] = choice
    for field in ("temperature", "top_p", "parallel_tool_calls", "keep_alive", "user"):
        if (value := getattr(request, field)) is not None:
            body[field] = value
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    fmt = request.text.format if request.text else None
    if fmt is not None:
        if fmt.type == "json_schema":
            spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
            if fmt.description is not None:
                spec["description"] = fmt.description
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            body["response_format"] = {"type": fmt.type}
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    if request.wants_logprobs():
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.options is not None:
        body["options"] = request.options.model_dump(exclude_none=True)
    return body


# --- the answer ----------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs(content: Any) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content`` in the Responses shape (``bytes`` always a list)."""
    def one(entry: dict[str, Any]) -> dict[str, Any]:
        token = str(entry.get("token", ""))
        raw = entry.get("bytes")
        return {"token": token, "logprob": float(entry.get("logprob") or 0),
                "bytes": list(raw) if isinstance(raw, list) else list(token.encode())}

    return [{**one(e), "top_logprobs": [one(t) for t in e.get("top_logprobs") or []
                                        if isinstance(t, dict)]}
            for e in content or [] if isinstance(e, dict)]


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "status": "completed",
            "summary": [{"type": "summary_text", "text": text}], "encrypted_content": None}


def text_part(text: str, logprob_list: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [],
            "logprobs": logprob_list or []}


def message_item(item_id: str, text: str, status: str,
                 logprob_list: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [text_part(text, logprob_list)]}


def status_of(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def output_of(data: dict[str, Any], offered: tools.ToolMap,
              ) -> tuple[list[dict[str, Any]], str | None, dict[str, int]]:
    """(output items, finish reason, chat usage) of the worker's one ``chat.completion``."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status = "incomplete" if finish == "length" else "completed"
    items: list[dict[str, Any]] = []
    if thinking := message.get("reasoning") or message.get("reasoning_content"):
        items.append(reasoning_item(new_id("rs"), thinking))
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    if text or not calls:
        found = (choice.get("logprobs") or {}).get("content")
        items.append(message_item(new_id("msg"), text, status, logprobs(found)))
    items.extend(tools.output_item(new_id("fc"), call, offered) for call in calls)
    return items, finish, data.get("usage") or {}


def response_object(response_id: str, created_at: int, echo: dict[str, Any], model: str, *,
                    status: str, output: list[dict[str, Any]],
                    usage_: dict[str, Any] | None = None,
                    incomplete: dict[str, str] | None = None,
                    error: dict[str, str] | None = None) -> dict[str, Any]:
    """A Response object (``object: "response"``) with the request's fields echoed."""
    return {"id": response_id, "object": "response", "created_at": created_at,
            "status": status, "error": error, "incomplete_details": incomplete,
            "model": model, "output": output, "usage": usage_, **echo}
