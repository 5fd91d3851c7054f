"""OpenAI ⇄ Ollama native translation, both ways, with no I/O.

Requests: an OpenAI chat body becomes an ``/api/chat`` body (Ollama's own ``/v1`` layer would drop
``options``, so Pendra always speaks native). ``options.num_ctx`` is injected from discovery unless
the client sent its own (as an extra ``options`` object in the OpenAI body); the client's other
``options`` keys pass through, once their types are checked (options.py). The control plane
validated the body already; a malformed one that slips past still fails with ``InvalidRequest``
naming the field, never a TypeError (defence in depth). Responses: native NDJSON lines become OpenAI
``chat.completion.chunk`` objects (role only in the first, a separate finish chunk, the usage chunk
only when asked) or one ``chat.completion``, each with the ``system_fingerprint`` the backend gives
(backends.base.system_fingerprint: stable per backend build and model). Thinking is returned as ``reasoning``, the field name
Ollama's own OpenAI layer uses. ``logprobs``/``top_logprobs`` are passed to Ollama (native since
0.12.11) and its per-token log probabilities come back in OpenAI's ``choices[].logprobs.content``,
on the chunk of the tokens they belong to, or all together in a whole answer.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from pendra.backends.base import Usage
from pendra.backends.ollama.options import check_options
from pendra.errors import InvalidRequest

# reasoning_effort → think (reference §6.2).
THINK_LEVELS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low",
                                       "medium": "medium", "high": "high", "max": "max",
                                       "xhigh": "max", "ultra": "max"}
DATA_URI_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                     "data:image/webp;base64,", "data:image/gif;base64,", "data:;base64,")


def _image(url: str) -> str:
    for prefix in DATA_URI_PREFIXES:
        if url.startswith(prefix):
            return url[len(prefix):]
    if url.startswith(("http://", "https://")):
        raise InvalidRequest("image URLs are not supported; send the image as a base64 data: URI")
    raise InvalidRequest("image_url must be a base64 data: URI (data:image/png;base64,...)")


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """OpenAI message content → (text, raw base64 images)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts")
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text", "")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.content[{i}].text must be a string",
                                     param=f"{where}.content[{i}].text")
            texts.append(text)
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise InvalidRequest(f"{where}.content[{i}].image_url.url is required")
            images.append(_image(url))
        else:
            raise InvalidRequest(f"{where}.content[{i}] has unsupported type {kind!r}",
                                 param=f"{where}.content[{i}].type")
    return "\n".join(texts), images


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list")
    names_by_call: dict[str, str] = {}
    native: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise InvalidRequest(f"{where} needs a role")
        role = msg["role"].lower()
        if role == "developer":  # OpenAI's newer name for the system role; Ollama knows "system"
            role = "system"
        text, images = _content(msg.get("content"), where)
        out: dict[str, Any] = {"role": role, "content": text}
        if images:
            out["images"] = images
        thinking = msg.get("reasoning") or msg.get("reasoning_content")
        if isinstance(thinking, str) and thinking:
            out["thinking"] = thinking
        calls = []
        tool_calls = msg.get("tool_calls") or []
        if not isinstance(tool_calls, list):
            raise InvalidRequest(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
        for j, call in enumerate(tool_calls):
            at = f"{where}.tool_calls[{j}]"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name", ""), str):
                raise InvalidRequest(f"{at} must be an object with a function name",
                                     param=f"{at}.function")
            raw = fn.get("arguments")
            try:
                arguments = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{at}.function.arguments is not valid JSON",
                                     param=f"{at}.function.arguments") from exc
            if not isinstance(arguments, dict):
                raise InvalidRequest(f"{at}.function.arguments must be a JSON object",
                                     param=f"{at}.function.arguments")
            native_call: dict[str, Any] = {"function": {"name": fn.get("name", ""), "arguments": arguments}}
            call_id = call.get("id")
            if isinstance(call_id, str) and call_id:
                native_call["id"] = call_id
                names_by_call[call_id] = fn.get("name", "")
            calls.append(native_call)
        if calls:
            out["tool_calls"] = calls
        if role == "tool":
            call_id = msg.get("tool_call_id")
            call_id = call_id if isinstance(call_id, str) else ""
            name = msg.get("name")
            name = name if isinstance(name, str) and name else names_by_call.get(call_id, "")
            if name:
                out["tool_name"] = name
            if call_id:
                out["tool_call_id"] = call_id
        native.append(out)
    return native


def _think(body: dict[str, Any]) -> bool | str | None:
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    if effort is None:
        think = body.get("think")
        return think if isinstance(think, bool | str) else None
    if not isinstance(effort, str) or effort not in THINK_LEVELS:
        raise InvalidRequest(f"invalid reasoning_effort {effort!r}: use one of "
                             + ", ".join(THINK_LEVELS), param="reasoning_effort")
    return THINK_LEVELS[effort]


# OpenAI's numeric sampling fields → Ollama's option of the same name, and their ranges.
SAMPLING_FIELDS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0, 2), "top_p": (float, 0, 1), "seed": (int, -(2**63), 2**63 - 1),
    "frequency_penalty": (float, -2, 2), "presence_penalty": (float, -2, 2)}


def _number(body: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (kind is int and not isinstance(value, int)) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be {'an integer' if kind is int else 'a number'} from "
                             f"{low:g} to {high:g}", param=key)
    return value


def _stop(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("stop must be a string or a list of at most 4 strings", param="stop")
    return list(stops)


def include_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``: whether a streamed answer ends with a usage chunk."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    return options.get("include_usage") is True


def chat_request(body: dict[str, Any], model: str, *, num_ctx: int | None) -> dict[str, Any]:
    """The native ``/api/chat`` body for an OpenAI chat ``body`` (always streamed from Ollama)."""
    client_options = check_options(body.get("options") or {})
    options: dict[str, Any] = {}
    for key in ("max_completion_tokens", "max_tokens"):
        max_tokens = _number(body, key, int, 1, 2**31 - 1)
        if max_tokens is not None:
            options["num_predict"] = max_tokens
            break
    for key, (kind, low, high) in SAMPLING_FIELDS.items():
        if (value := _number(body, key, kind, low, high)) is not None:
            options[key] = value
    if (stop := _stop(body)) is not None:
        options["stop"] = stop
    options.update(client_options)  # the client's own options always win
    if num_ctx and "num_ctx" not in client_options:
        options["num_ctx"] = num_ctx
    native: dict[str, Any] = {"model": model, "messages": _messages(body.get("messages")),
                              "stream": True}
    if options:
        native["options"] = options
    tools = offered_tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        native["tools"] = tools
    fmt = body.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            native["format"] = "json"
        elif fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest("response_format.json_schema.schema must be an object",
                                     param="response_format.json_schema.schema")
            native["format"] = schema
    think = _think(body)
    if think is not None:
        native["think"] = think
    keep_alive = body.get("keep_alive")
    if keep_alive is not None:
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float):
            raise InvalidRequest("keep_alive must be a duration (\"5m\") or seconds",
                                 param="keep_alive")
        native["keep_alive"] = keep_alive
    if wants_logprobs(body):
        native["logprobs"] = True
        top = _number(body, "top_logprobs", int, 0, 20)
        if top:
            native["top_logprobs"] = top
    return native


def offered_tools(tools: Any, choice: Any) -> list[dict[str, Any]]:
    """The tools to offer Ollama, as ``tool_choice`` allows: all of them for ``auto`` (the
    default), none for ``none``, only the named one for ``{"type": "function", "function":
    {"name"}}`` (Ollama cannot force a call, so that is as far as it goes); ``required`` cannot be
    honoured by Ollama and is refused rather than silently treated as ``auto``."""
    tools = tools or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InvalidRequest("tools must be a list of objects", param="tools")
    if choice is None or choice == "auto":
        return tools
    if choice == "none":
        return []
    if choice == "required":
        raise InvalidRequest("tool_choice \"required\" cannot be honoured: Ollama cannot force a "
                             "tool call; use \"auto\" or name the function", param="tool_choice")
    name = ((choice.get("function") or {}).get("name") if isinstance(choice, dict) else None)
    if not isinstance(name, str):
        raise InvalidRequest("tool_choice must be \"none\", \"auto\" or {\"type\": \"function\", "
                             "\"function\": {\"name\": …}}", param="tool_choice")
    named = [t for t in tools if (t.get("function") or {}).get("name") == name]
    if not named:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools",
                             param="tool_choice")
    return named


def wants_logprobs(body: dict[str, Any]) -> bool:
    """``logprobs: true``: whether the answer carries each token's log probability."""
    value = body.get("logprobs")
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("logprobs must be a boolean", param="logprobs")
    return value is True


def _openai_logprob(native: Any) -> dict[str, Any]:
    """One native Logprob (``{token, logprob, bytes?, top_logprobs?}``) in OpenAI's shape, where
    ``bytes`` is null when unknown and ``top_logprobs`` always a list."""
    if not isinstance(native, dict):
        return {"token": "", "logprob": 0.0, "bytes": None, "top_logprobs": []}

    def one(entry: dict[str, Any]) -> dict[str, Any]:
        return {"token": str(entry.get("token", "")), "logprob": float(entry.get("logprob") or 0),
                "bytes": entry.get("bytes") or None}

    top = [one(t) for t in native.get("top_logprobs") or [] if isinstance(t, dict)]
    return {**one(native), "top_logprobs": top}


def _openai_tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    fn = call.get("function") or {}
    arguments = fn.get("arguments")
    return {"index": index, "id": call.get("id") or "call_" + secrets.token_hex(4),
            "type": "function",
            "function": {"name": fn.get("name", ""),
                         "arguments": arguments if isinstance(arguments, str)
                         else json.dumps(arguments or {}, separators=(",", ":"))}}


@dataclass
class ChatTranslator:
    """Turns native chat lines into OpenAI chunks (stream) or one completion (not stream)."""

    model: str
    stream: bool
    include_usage: bool = False
    logprobs: bool = False  # the client asked for logprobs: pass Ollama's on
    fingerprint: str | None = None  # system_fingerprint (backends.base.system_fingerprint)
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    _role_sent: bool = False
    _content: list[str] = field(default_factory=list)
    _reasoning: list[str] = field(default_factory=list)
    _calls: list[dict[str, Any]] = field(default_factory=list)
    _logprobs: list[dict[str, Any]] = field(default_factory=list)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return self._envelope("chat.completion.chunk",
                              [{"index": 0, "delta": delta, "finish_reason": finish}])

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "object": kind, "created": self.created,
                                "model": self.model}
        if self.fingerprint:
            data["system_fingerprint"] = self.fingerprint
        data["choices"] = choices
        return data

    def feed(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one native line (an ``error`` line is handled by the caller)."""
        message = line.get("message") or {}
        out: list[dict[str, Any]] = []
        thinking = message.get("thinking") or ""
        content = message.get("content") or ""
        if thinking:
            self._reasoning.append(thinking)
            out.append(self._chunk({"content": "", "reasoning": thinking}))
        if content:
            self._content.append(content)
            out.append(self._chunk({"content": content}))
        for call in message.get("tool_calls") or []:
            converted = _openai_tool_call(call, len(self._calls))
            self._calls.append(converted)
            out.append(self._chunk({"tool_calls": [converted]}))
        if self.logprobs and (found := line.get("logprobs")):
            converted_lps = [_openai_logprob(lp) for lp in found] if isinstance(found, list) else []
            self._logprobs.extend(converted_lps)
            if not out:  # log probabilities of tokens that produced no text of their own
                out.append(self._chunk({"content": ""}))
            out[-1]["choices"][0]["logprobs"] = {"content": converted_lps}
        if line.get("done"):
            self.usage = Usage(int(line.get("prompt_eval_count") or 0), int(line.get("eval_count") or 0))
            reason = line.get("done_reason") or "stop"
            if reason == "stop" and self._calls:
                reason = "tool_calls"
            elif reason not in ("stop", "length"):
                reason = "stop"
            self.finish_reason = reason
            out.append(self._chunk({}, reason))
            if self.include_usage:
                out.append({**self._envelope("chat.completion.chunk", []),
                            "usage": self.usage.to_dict()})
        return out if self.stream else []

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content)}
        if self._reasoning:
            message["reasoning"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in self._calls]
            if not message["content"]:
                message["content"] = None
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "finish_reason": self.finish_reason or "stop"}
        if self.logprobs:
            choice["logprobs"] = {"content": list(self._logprobs)}
        return {**self._envelope("chat.completion", [choice]), "usage": self.usage.to_dict()}


# --- embeddings ------------------------------------------------------------------------------------------


def embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: list[str] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, str) for i in raw):
        inputs = raw
    else:
        raise InvalidRequest("input must be a string or a non-empty list of strings")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise InvalidRequest(f"encoding_format must be 'float' or 'base64', not {fmt!r}")
    native: dict[str, Any] = {"model": model, "input": inputs}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidRequest("dimensions must be a positive integer", param="dimensions")
        native["dimensions"] = dimensions
    return native


def embed_response(native: dict[str, Any], body: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, vector in enumerate(native.get("embeddings") or []):
        value: Any = vector
        if as_base64:
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": index})
    usage = Usage(int(native.get("prompt_eval_count") or 0), 0)
    return ({"object": "list", "data": data, "model": model,
             "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}},
            usage)


# --- images ----------------------------------------------------------------------------------------------


def image_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("prompt is required")
    native: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False}
    size = body.get("size")
    if size and size != "auto":
        try:
            width, height = (int(v) for v in str(size).lower().split("x"))
        except ValueError as exc:
            raise InvalidRequest(f"size must look like 1024x1024, not {size!r}") from exc
        native["width"], native["height"] = width, height
    if body.get("seed") is not None:
        native["options"] = {"seed": body["seed"]}
    return native


def image_requests(body: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """One native ``/api/generate`` body per image asked for (``n``, default 1; Ollama makes one
    image per call). With a ``seed``, image *i* uses ``seed + i``: the same request gives the same
    images, and they differ from each other."""
    count = _number(body, "n", int, 1, 10) or 1
    if body.get("response_format") == "url":
        raise InvalidRequest("images are returned inline only (b64_json)", param="response_format")
    first = image_request(body, model)
    natives = [first]
    for i in range(1, count):
        native = dict(first)
        if "options" in first:
            native["options"] = {**first["options"], "seed": first["options"]["seed"] + i}
        natives.append(native)
    return natives


def image_response(natives: list[dict[str, Any]]) -> dict[str, Any]:
    return {"created": int(time.time()),
            "data": [{"b64_json": native.get("image", "")} for native in natives]}
