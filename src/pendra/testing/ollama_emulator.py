"""A faithful emulator of Ollama's native HTTP API, run as a real process for tests and benches.

Built from shared/reference/ollama-api.md: exact keys, statuses and error texts; NDJSON streaming
with errors as a trailing ``{"error": …}`` line once streaming has begun; version-dependent fields
(tags capabilities from 0.30.0, image generation 0.14.3–0.32.5); context-window truncation by
``num_ctx``; layered pull progress. Everything it receives is recorded, and a ``/_emulator/*``
surface (never used by real clients) lets tests inspect and steer it; ``[[…]]`` markers in a prompt
steer one answer (length, pace, a load delay, a dying or hanging runner: see
``emulator_models.MARKER``).

Run: ``python -m pendra.testing.ollama_emulator --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pendra.backends.ollama.version import (TAGS_CAPABILITIES_SINCE, has_image_generation,
                                            parse_version)
from pendra.testing.emulator_models import (DEFAULT_MODELS, REGISTRY, ModelSpec, count_prompt_tokens,
                                            embedding, json_text, layers_for, local_now, normalise,
                                            normalise_vector, png, qualified, reply_tokens,
                                            rfc3339, schema_value, steering_of, tool_call_id)

DEFAULT_VERSION = "0.32.15"
RECORD_LIMIT = 1000
INT_OPTIONS = {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed",
               "num_predict", "top_k", "repeat_last_n", "draft_num_predict"}
FLOAT_OPTIONS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty",
                 "presence_penalty", "frequency_penalty"}
RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")
PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the "
                   "model; shorten the prompt, adjust the context length in settings, or use a "
                   "model with a longer context length")
THINKING = "Let me think about this step by step.".split()


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Settings:
    version: str = DEFAULT_VERSION
    latency_s: float = 0.0
    show_delay_s: float = 0.0
    token_delay_s: float = 0.0
    pull_bytes_per_s: float = 2_000_000_000.0
    default_num_ctx: int = 4096
    fail_show_for: list[str] = field(default_factory=list)
    fail_after_tokens: int | None = None
    die_during_pull: bool = False


@dataclass
class Loaded:
    num_ctx: int
    expires_at: Any


class Emulator:
    """The emulated server's state."""

    def __init__(self, settings: Settings, models: list[dict[str, Any]]) -> None:
        self.settings = settings
        self.models: dict[str, ModelSpec] = {}
        for data in models:
            self.add(ModelSpec.from_dict(data))
        self.registry = {normalise(d["name"]): d for d in REGISTRY + DEFAULT_MODELS}
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
        self.loaded: dict[str, Loaded] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.show_in_flight = 0
        self.show_max_in_flight = 0
        self.cancelled: list[dict[str, Any]] = []
        self.reloads = 0
        self.pulls_cancelled = 0

    def add(self, spec: ModelSpec) -> None:
        spec.modified_at = local_now()
        self.models[spec.name.lower()] = spec

    def find(self, name: str) -> ModelSpec | None:
        return self.models.get(normalise(name).lower())

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.settings.version) or (0, 0, 0)

    def stats(self) -> dict[str, Any]:
        return {"show_in_flight": self.show_in_flight,
                "show_max_in_flight": self.show_max_in_flight, "cancelled": self.cancelled,
                "reloads": self.reloads, "pulls_cancelled": self.pulls_cancelled}

    def load(self, spec: ModelSpec, num_ctx: int, keep_alive: Any) -> None:
        current = self.loaded.get(spec.name)
        if current is not None and current.num_ctx != num_ctx:
            self.reloads += 1
        expires = local_now() + timedelta(minutes=5)
        if isinstance(keep_alive, int | float) and keep_alive < 0:
            expires = local_now() + timedelta(days=365 * 292)
        self.loaded[spec.name] = Loaded(num_ctx, expires)


# --- request helpers ----------------------------------------------------------------------------------


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise OllamaError(400, "missing request body")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OllamaError(400, f"invalid character {raw[exc.pos:exc.pos + 1].decode(errors='replace')!r} "
                               "looking for beginning of value" if exc.pos < len(raw) else "unexpected EOF") from exc
    if not isinstance(data, dict):
        raise OllamaError(400, "json: cannot unmarshal array into Go value of type api.Request")
    return data


def check_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise OllamaError(400, "json: cannot unmarshal into Go struct field options of type map[string]interface {}")
    for key, value in options.items():
        if key in INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)
                                   or (isinstance(value, float) and not value.is_integer())):
            raise OllamaError(500, f'option "{key}" must be of type integer')
        if key in FLOAT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise OllamaError(500, f'option "{key}" must be of type float')
        if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            raise OllamaError(500, 'option "stop" must be of type array')
    return options


def error_response(exc: OllamaError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def ndjson(line: dict[str, Any]) -> bytes:
    return (json_text(line) + "\n").encode()


def now_text() -> str:
    from datetime import UTC, datetime

    return rfc3339(datetime.now(UTC))


def metrics(started: float, prompt: int, generated: int) -> dict[str, int]:
    total = max(int((time.monotonic() - started) * 1e9), 1)
    return {"total_duration": total, "load_duration": min(total, 1_000_000),
            "prompt_eval_count": prompt, "prompt_eval_duration": max(total // 10, 1),
            "eval_count": generated, "eval_duration": max(total // 2, 1)}


# --- the plan of one chat/generate answer -----------------------------------------------------------------


@dataclass
class Plan:
    thinking: list[str]
    tokens: list[str]
    tool_calls: list[dict[str, Any]]
    done_reason: str
    error_after: int | None
    delay_s: float
    prompt_tokens: int
    load_s: float = 0.0  # "loading the model" before the response starts
    stall_after: int | None = None  # go silent (connection open) after this many tokens


def plan_answer(emu: Emulator, spec: ModelSpec, body: dict[str, Any], messages: list[dict[str, Any]],
                options: dict[str, Any], *, chat: bool) -> Plan:
    think = body.get("think")
    if think not in (None, True, False, "low", "medium", "high", "max"):
        raise OllamaError(400, f'invalid think value: {json.dumps(think)} (must be "high", "medium", '
                               '"low", "max", true, or false)')
    if think not in (None, False) and not spec.has("thinking"):
        raise OllamaError(400, f'"{body.get("model")}" does not support thinking')
    tools = body.get("tools") or []
    if tools and not spec.has("tools"):
        raise OllamaError(400, f"{qualified(spec.name)} does not support tools")
    num_ctx = int(options.get("num_ctx") or emu.settings.default_num_ctx)
    if spec.context_length:
        num_ctx = min(num_ctx, spec.context_length)
    emu.load(spec, num_ctx, body.get("keep_alive"))
    prompt_tokens = count_prompt_tokens(messages)
    if prompt_tokens > num_ctx:
        if body.get("shift") is False:
            raise OllamaError(400, PROMPT_TOO_LONG)
        prompt_tokens = num_ctx // 2 + 2
    last = messages[-1] if messages else {}
    text, steer = steering_of(str(last.get("content") or ""))
    thinking = THINKING if spec.has("thinking") and think is not False else []
    tool_calls: list[dict[str, Any]] = []
    tokens: list[str] = []
    fmt = body.get("format")
    if chat and tools and last.get("role") == "user":
        fn = tools[0].get("function") or {}
        tool_calls = [{"id": tool_call_id(text + fn.get("name", "")),
                       "function": {"index": 0, "name": fn.get("name", ""),
                                    "arguments": schema_value(fn.get("parameters") or {"type": "object"})}}]
    elif fmt == "json":
        tokens = [json_text({"echo": text})]
    elif isinstance(fmt, dict):
        tokens = [json_text(schema_value(fmt))]
    elif fmt is not None:
        raise OllamaError(500, f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema object')
    else:
        tokens = reply_tokens(text, steer.tokens)
    done_reason = "stop"
    limit = options.get("num_predict")
    if isinstance(limit, int | float) and limit >= 0 and len(tokens) > limit:
        tokens, done_reason = tokens[: int(limit)], "length"
    for stop in options.get("stop") or []:
        joined = " ".join(tokens)
        if stop and stop in joined:
            tokens = joined[: joined.index(stop)].split()
            done_reason = "stop"
    error_after = steer.error_after
    if error_after is None and emu.settings.fail_after_tokens is not None:
        error_after = emu.settings.fail_after_tokens
        emu.settings.fail_after_tokens = None
    delay = steer.delay_s if steer.delay_s is not None else emu.settings.token_delay_s
    return Plan(thinking, tokens, tool_calls, done_reason, error_after, delay, prompt_tokens,
                load_s=steer.load_s, stall_after=steer.stall_after)


async def answer_lines(emu: Emulator, request: Request, spec: ModelSpec, model_field: str,
                       plan: Plan, *, chat: bool) -> AsyncIterator[dict[str, Any]]:
    """Every NDJSON line of one answer (the last is done:true, or an error line)."""
    started = time.monotonic()
    sent = 0
    pieces: list[tuple[str, str]] = [("thinking", t if i == 0 else " " + t) for i, t in enumerate(plan.thinking)]
    pieces += [("content", t if i == 0 else " " + t) for i, t in enumerate(plan.tokens)]
    for kind, piece in pieces:
        if plan.error_after is not None and sent >= plan.error_after:
            yield {"error": RUNNER_STOPPED}
            return
        if plan.stall_after is not None and sent >= plan.stall_after:
            await asyncio.Event().wait()  # hung: silent until the client goes away
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        sent += 1
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": piece if kind == "content" else ""}
            if kind == "thinking":
                message["thinking"] = piece
            yield {"model": model_field, "created_at": now_text(), "message": message, "done": False}
        else:
            line: dict[str, Any] = {"model": model_field, "created_at": now_text(),
                                    "response": piece if kind == "content" else "", "done": False}
            if kind == "thinking":
                line["thinking"] = piece
            yield line
    if plan.error_after is not None:
        yield {"error": RUNNER_STOPPED}  # the runner died before finishing
        return
    if plan.tool_calls:
        yield {"model": model_field, "created_at": now_text(),
               "message": {"role": "assistant", "content": "", "tool_calls": plan.tool_calls},
               "done": False}
    final: dict[str, Any] = {"model": model_field, "created_at": now_text()}
    if chat:
        final["message"] = {"role": "assistant", "content": ""}
    else:
        final["response"] = ""
    final.update({"done": True, "done_reason": plan.done_reason})
    if not chat:
        final["context"] = [128006, 9125, 128007, 271]
    final.update(metrics(started, plan.prompt_tokens, len(plan.tokens) + len(plan.thinking)))
    yield final


def merge_lines(lines: list[dict[str, Any]], *, chat: bool) -> dict[str, Any]:
    """The non-streaming answer: concatenated text, union of tool calls, the final line's metrics."""
    final = dict(lines[-1])
    if chat:
        content = "".join(l["message"].get("content", "") for l in lines)
        thinking = "".join(l["message"].get("thinking", "") for l in lines)
        calls = [c for l in lines for c in l["message"].get("tool_calls", [])]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(l.get("response", "") for l in lines)
        thinking = "".join(l.get("thinking", "") for l in lines)
        if thinking:
            final["thinking"] = thinking
    return final


def stream_or_single(emu: Emulator, request: Request, body: dict[str, Any],
                     lines: AsyncIterator[dict[str, Any]], *, chat: bool, model: str) -> Response:
    if body.get("stream", True) is False:
        return SingleResponse(lines, chat=chat)
    return StreamingResponse(recorded_stream(emu, request, lines, model),
                             media_type="application/x-ndjson")


async def recorded_stream(emu: Emulator, request: Request, lines: AsyncIterator[dict[str, Any]],
                          model: str) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for line in lines:
            yield ndjson(line)
        finished = True
    finally:
        if not finished:
            emu.cancelled.append({"path": request.url.path, "model": model, "ts": time.time()})


class SingleResponse(Response):
    """``stream: false``: collect every line; an error line becomes the error status."""

    def __init__(self, lines: AsyncIterator[dict[str, Any]], *, chat: bool) -> None:
        super().__init__(media_type="application/json; charset=utf-8")
        self._lines = lines
        self._chat = chat

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        collected = [line async for line in self._lines]
        if "error" in collected[-1]:
            response: Response = JSONResponse(collected[-1], status_code=500)
        else:
            response = Response(json_text(merge_lines(collected, chat=self._chat)),
                                media_type="application/json; charset=utf-8")
        await response(scope, receive, send)


# --- routes --------------------------------------------------------------------------------------------------


def build_app(emu: Emulator) -> Starlette:
    async def record(request: Request) -> None:
        if request.url.path.startswith("/_emulator"):
            return
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            body = None
        emu.requests.append({"method": request.method, "path": request.url.path, "body": body,
                             "ts": time.time()})
        if emu.settings.latency_s:
            await asyncio.sleep(emu.settings.latency_s)

    def endpoint(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            await record(request)
            try:
                result: Response = await handler(request)
                return result
            except OllamaError as exc:
                return error_response(exc)
        return wrapped

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running", media_type="text/plain; charset=utf-8")

    async def version(request: Request) -> Response:
        return JSONResponse({"version": emu.settings.version})

    async def tags(request: Request) -> Response:
        modern = emu.version_tuple >= TAGS_CAPABILITIES_SINCE
        entries = []
        for spec in sorted(emu.models.values(), key=lambda s: s.modified_at, reverse=True):
            entry: dict[str, Any] = {"name": spec.name, "model": spec.name,
                                     "modified_at": rfc3339(spec.modified_at), "size": spec.size,
                                     "digest": spec.digest,
                                     "details": spec.details(with_lengths=modern)}
            if modern:
                entry["capabilities"] = spec.capabilities
            entries.append(entry)
        return JSONResponse({"models": entries})

    async def show(request: Request) -> Response:
        body = await read_body(request)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise OllamaError(400, "model is required")
        emu.show_in_flight += 1
        emu.show_max_in_flight = max(emu.show_max_in_flight, emu.show_in_flight)
        try:
            if emu.settings.show_delay_s:
                await asyncio.sleep(emu.settings.show_delay_s)
        finally:
            emu.show_in_flight -= 1
        spec = emu.find(name)
        if spec is None:
            raise OllamaError(404, f"model '{normalise(name)}' not found")
        if spec.name in {normalise(n) for n in emu.settings.fail_show_for}:
            raise OllamaError(500, f"failed to read model {spec.name}: unexpected EOF")
        data: dict[str, Any] = {
            "license": spec.license or "",
            "modelfile": f'# Modelfile generated by "ollama show"\n# To build a new Modelfile '
                         f"based on this, replace FROM with:\n# FROM {spec.name}\n\nFROM "
                         f"~/.ollama/models/blobs/sha256-{spec.digest}\n",
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": spec.details(with_lengths=False),
            "model_info": spec.model_info(),
            "tensors": [{"name": "token_embd.weight", "type": "Q6_K", "shape": [spec.embedding_length, 128256]}],
            "capabilities": spec.capabilities,
            "modified_at": rfc3339(spec.modified_at),
        }
        return JSONResponse({k: v for k, v in data.items() if v != "" or k == "model_info"})

    async def ps(request: Request) -> Response:
        entries = []
        for name, loaded in sorted(emu.loaded.items(), key=lambda kv: kv[1].expires_at, reverse=True):
            spec = emu.find(name)
            if spec is None:
                continue
            entries.append({"name": spec.name, "model": spec.name, "size": spec.size,
                            "digest": spec.digest, "details": spec.details(with_lengths=False),
                            "expires_at": rfc3339(loaded.expires_at), "size_vram": spec.size,
                            "context_length": loaded.num_ctx})
        return JSONResponse({"models": entries})

    def require_model(body: dict[str, Any], *, missing_status: int, not_found: str) -> ModelSpec:
        name = body.get("model") or ""
        if not isinstance(name, str) or not name:
            if missing_status == 400:
                raise OllamaError(400, "model is required")
            raise OllamaError(404, "model '' not found")
        spec = emu.find(name)
        if spec is None:
            raise OllamaError(404, not_found.format(name=name))
        return spec

    async def chat(request: Request) -> Response:
        body = await read_body(request)
        spec = require_model(body, missing_status=400, not_found="model '{name}' not found")
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise OllamaError(400, "json: cannot unmarshal string into Go struct field "
                                   "ChatRequest.messages of type []api.Message")
        options = check_options(body.get("options"))
        if not spec.has("completion"):
            raise OllamaError(400, f'"{body["model"]}" does not support chat')
        if not messages:
            unload = body.get("keep_alive") == 0
            if unload:
                emu.loaded.pop(spec.name, None)
            return JSONResponse({"model": body["model"], "created_at": now_text(),
                                 "message": {"role": "assistant", "content": ""}, "done": True,
                                 "done_reason": "unload" if unload else "load"})
        plan = plan_answer(emu, spec, body, messages, options, chat=True)
        if plan.load_s:
            await asyncio.sleep(plan.load_s)  # Ollama loads the model before sending any byte
        lines = answer_lines(emu, request, spec, body["model"], plan, chat=True)
        return stream_or_single(emu, request, body, lines, chat=True, model=spec.name)

    async def generate(request: Request) -> Response:
        body = await read_body(request)
        spec = require_model(body, missing_status=404, not_found="model '{name}' not found")
        options = check_options(body.get("options"))
        if spec.has("image"):
            return await generate_image(request, body, spec, options)
        if not spec.has("completion"):
            raise OllamaError(400, f'"{body["model"]}" does not support generate')
        prompt = body.get("prompt") or ""
        if not prompt:
            unload = body.get("keep_alive") == 0
            return JSONResponse({"model": body["model"], "created_at": now_text(), "response": "",
                                 "done": True, "done_reason": "unload" if unload else "load"})
        messages = [{"role": "user", "content": prompt}]
        plan = plan_answer(emu, spec, body, messages, options, chat=False)
        if plan.load_s:
            await asyncio.sleep(plan.load_s)  # Ollama loads the model before sending any byte
        lines = answer_lines(emu, request, spec, body["model"], plan, chat=False)
        return stream_or_single(emu, request, body, lines, chat=False, model=spec.name)

    async def generate_image(request: Request, body: dict[str, Any], spec: ModelSpec,
                             options: dict[str, Any]) -> Response:
        if not has_image_generation(emu.settings.version):
            raise OllamaError(400, "image generation models are not currently supported")
        width, height = int(body.get("width") or 1024), int(body.get("height") or 1024)
        if width > 4096 or height > 4096:
            raise OllamaError(400, "width and height must be <= 4096")
        steps = int(body.get("steps") or 9)
        seed = f"{body.get('prompt')}:{options.get('seed')}"
        image = base64.b64encode(png(min(width, 64), min(height, 64), seed)).decode()

        async def lines() -> AsyncIterator[dict[str, Any]]:
            started = time.monotonic()
            for step in range(1, steps + 1):
                if emu.settings.token_delay_s:
                    await asyncio.sleep(emu.settings.token_delay_s)
                yield {"model": body["model"], "created_at": now_text(), "response": "",
                       "done": False, "completed": step, "total": steps}
            final = {"model": body["model"], "created_at": now_text(), "response": "", "done": True,
                     "done_reason": "stop"}
            m = metrics(started, 0, 0)
            final.update({"total_duration": m["total_duration"], "load_duration": m["load_duration"],
                          "image": image})
            yield final

        if body.get("stream", True) is False:
            collected = [line async for line in lines()]
            return Response(json_text(collected[-1]), media_type="application/json; charset=utf-8")
        return StreamingResponse(recorded_stream(emu, request, lines(), spec.name),
                                 media_type="application/x-ndjson")

    async def embed(request: Request) -> Response:
        body = await read_body(request)
        spec = require_model(body, missing_status=404,
                             not_found='model "{name}" not found, try pulling it first')
        check_options(body.get("options"))
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if inputs is None or inputs == [""] or inputs == []:
            return JSONResponse({"model": body["model"], "embeddings": []})
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise OllamaError(400, "invalid input type")
        started = time.monotonic()
        limit = spec.context_length or 2048
        tokens = [len(text.split()) + 2 for text in inputs]
        if body.get("truncate") is False and max(tokens) > limit:
            raise OllamaError(400, "the input length exceeds the context length")
        dim = spec.embedding_length
        vectors = [embedding(text, dim) for text in inputs]
        wanted = body.get("dimensions")
        if isinstance(wanted, int) and 0 < wanted < dim:
            vectors = [normalise_vector(v[:wanted]) for v in vectors]
        m = metrics(started, sum(min(t, limit) for t in tokens), 0)
        return JSONResponse({"model": body["model"], "embeddings": vectors,
                             "total_duration": m["total_duration"],
                             "load_duration": m["load_duration"],
                             "prompt_eval_count": m["prompt_eval_count"]})

    async def embeddings_legacy(request: Request) -> Response:
        body = await read_body(request)
        if not body.get("model"):
            raise OllamaError(400, "model is required")
        spec = require_model(body, missing_status=400,
                             not_found='model "{name}" not found, try pulling it first')
        prompt = body.get("prompt") or ""
        return JSONResponse({"embedding": embedding(prompt, spec.embedding_length) if prompt else []})

    async def pull(request: Request) -> Response:
        body = await read_body(request)
        name = body.get("model") or body.get("name") or ""
        if not name or any(c in name for c in " \t\n\"'") or name.startswith(":"):
            raise OllamaError(400, "invalid model name")
        data = emu.registry.get(normalise(name))

        async def progress() -> AsyncIterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            if data is None:
                yield {"error": "pull model manifest: file does not exist"}
                return
            spec = ModelSpec.from_dict(data)
            layers = layers_for(spec)
            budget = sum(size for _, size in layers)
            interval = 0.06
            for index, (digest, size) in enumerate(layers):
                status = f"pulling {digest[7:19]}"
                yield {"status": status, "digest": digest, "total": size}
                done = 0
                step = max(int(emu.settings.pull_bytes_per_s * interval), 1)
                while done < size:
                    await asyncio.sleep(interval)
                    done = min(size, done + step)
                    if emu.settings.die_during_pull and index == 0 and done >= size // 2:
                        os._exit(3)  # simulate Ollama dying mid-download
                    yield {"status": status, "digest": digest, "total": size, "completed": done}
            del budget
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            emu.add(spec)
            yield {"status": "success"}

        if body.get("stream", True) is False:
            collected = [line async for line in progress()]
            if "error" in collected[-1]:
                return JSONResponse(collected[-1], status_code=500)
            return JSONResponse(collected[-1])

        async def stream() -> AsyncIterator[bytes]:
            finished = False
            try:
                async for line in progress():
                    yield ndjson(line)
                finished = True
            finally:
                if not finished:
                    emu.pulls_cancelled += 1
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def delete(request: Request) -> Response:
        body = await read_body(request)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise OllamaError(400, "model is required")
        spec = emu.find(name)
        if spec is None:
            raise OllamaError(404, f"model '{name}' not found")
        del emu.models[spec.name.lower()]
        emu.loaded.pop(spec.name, None)
        return Response(status_code=200)

    # --- control surface ---------------------------------------------------------------------------

    async def ctl_requests(request: Request) -> Response:
        if request.method == "DELETE":
            emu.requests.clear()
            return Response(status_code=204)
        path = request.query_params.get("path")
        return JSONResponse([r for r in emu.requests if path is None or r["path"] == path])

    async def ctl_stats(request: Request) -> Response:
        return JSONResponse(emu.stats())

    async def ctl_stats_reset(request: Request) -> Response:
        emu.reset_stats()
        return Response(status_code=204)

    async def ctl_config(request: Request) -> Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(emu.settings, key):
                return JSONResponse({"error": f"unknown setting {key!r}"}, status_code=400)
            setattr(emu.settings, key, value)
        return JSONResponse(emu.settings.__dict__)

    async def ctl_models(request: Request) -> Response:
        spec = ModelSpec.from_dict(await request.json())
        emu.add(spec)
        return JSONResponse({"name": spec.name}, status_code=201)

    async def ctl_models_generate(request: Request) -> Response:
        count = int((await request.json()).get("count", 1))
        for i in range(count):
            emu.add(ModelSpec.from_dict({"name": f"synthetic-{i:04d}:latest", "family": "llama",
                                         "parameter_size": "1B", "context_length": 8192,
                                         "size": 700_000_000 + i}))
        return JSONResponse({"added": count}, status_code=201)

    async def ctl_model_remove(request: Request) -> Response:
        name = request.path_params["name"]
        spec = emu.find(name)
        if spec is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        del emu.models[spec.name.lower()]
        return Response(status_code=204)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        text = "405 method not allowed" if status == 405 else "404 page not found"
        await record(request)
        return PlainTextResponse(text, status_code=405 if status == 405 else 404)

    routes = [
        Route("/", endpoint(root), methods=["GET", "HEAD"]),
        Route("/api/version", endpoint(version), methods=["GET", "HEAD"]),
        Route("/api/tags", endpoint(tags), methods=["GET", "HEAD"]),
        Route("/api/show", endpoint(show), methods=["POST"]),
        Route("/api/ps", endpoint(ps), methods=["GET"]),
        Route("/api/chat", endpoint(chat), methods=["POST"]),
        Route("/api/generate", endpoint(generate), methods=["POST"]),
        Route("/api/embed", endpoint(embed), methods=["POST"]),
        Route("/api/embeddings", endpoint(embeddings_legacy), methods=["POST"]),
        Route("/api/pull", endpoint(pull), methods=["POST"]),
        Route("/api/delete", endpoint(delete), methods=["DELETE"]),
        Route("/_emulator/requests", ctl_requests, methods=["GET", "DELETE"]),
        Route("/_emulator/stats", ctl_stats, methods=["GET"]),
        Route("/_emulator/stats/reset", ctl_stats_reset, methods=["POST"]),
        Route("/_emulator/config", ctl_config, methods=["POST"]),
        Route("/_emulator/models", ctl_models, methods=["POST"]),
        Route("/_emulator/models/generate", ctl_models_generate, methods=["POST"]),
        Route("/_emulator/models/{name:path}", ctl_model_remove, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def load_models(choice: str) -> list[dict[str, Any]]:
    if choice == "default":
        return DEFAULT_MODELS
    if choice == "none":
        return []
    loaded: list[dict[str, Any]] = json.loads(Path(choice).read_text())
    return loaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulate Ollama's HTTP API (for tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--models", default="default", help="default | none | path to a JSON list")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--show-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    settings = Settings(version=args.version, token_delay_s=args.token_delay,
                        show_delay_s=args.show_delay)
    app = build_app(Emulator(settings, load_models(args.models)))
    # IPPROTO_TCP, not 0: asyncio turns on TCP_NODELAY only for sockets that say they are TCP, and
    # Ollama (Go's net/http) always has it on; without it every small response waits ~40 ms for a
    # delayed ACK (Nagle), which is not how the real server behaves.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
