"""The inference routes: ``/api/chat``, ``/api/generate`` (text, and images on the versions that
had them), ``/api/embed`` and the legacy ``/api/embeddings`` (shared/reference/ollama-api.md §4, §7).

Each handler checks in Ollama's order (server/routes.go): the body decodes (images are base64),
``top_logprobs`` is in range, the model is named and installed, an unload request is answered, the
model can think if asked to, it has the capabilities the request needs, its options have the right
types (§5.1), then the model loads; an empty prompt stops there (``done_reason: "load"``). Images
reach the model only if it has the ``vision`` capability; otherwise llama-server's refusal is relayed
(facts.NO_VISION). Generate's ``raw: true`` refuses ``template``/``system``/``context`` and its
final line carries no ``context``; a ``suffix`` (fill-in-the-middle) needs the ``insert``
capability (§4.1), and is rendered by the model's template (so dropped in raw mode, as Ollama does).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from pendra.testing.ollama.answers import Plan, answer_lines, merge_lines, plan_answer
from pendra.testing.ollama.content import embedding, normalise_vector, png
from pendra.testing.ollama.facts import (EMBED_TOO_LONG, IMAGE_MODELS_UNSUPPORTED, INVALID_THINK,
                                         NO_VISION, RAW_CONFLICT, THINK_VALUES,
                                         has_image_generation, has_logprobs)
from pendra.testing.ollama.models import ModelSpec, qualified
from pendra.testing.ollama.state import Emulator
from pendra.testing.ollama.wire import (CollectedResponse, OllamaError, check_options,
                                        check_top_logprobs, decode_images, json_text, metrics,
                                        now_text, read_body, recorded, unmarshal_error)

NDJSON = "application/x-ndjson"
# Image generation's defaults and bound (§7.2): 1024×1024, Z-Image Turbo's 9 steps, at most 4096.
IMAGE_SIDE, IMAGE_STEPS, IMAGE_MAX_SIDE = 1024, 9, 4096
# The emulator's PNGs are at most this wide and high (a real image is not needed, a valid one is).
PNG_MAX_SIDE = 64
# The embedding window of a model that reports no context length.
EMBED_CONTEXT = 2048


def require_model(emu: Emulator, body: dict[str, Any], *, missing: OllamaError,
                  not_found: str) -> ModelSpec:
    """The installed model ``body`` names; ``missing`` when none is named (§10)."""
    name = body.get("model") or ""
    if not isinstance(name, str) or not name:
        raise missing
    spec = emu.find(name)
    if spec is None:
        raise OllamaError(404, not_found.format(name=name))
    return spec


def check_think(body: dict[str, Any], spec: ModelSpec) -> None:
    """A bad ``think`` value fails to decode (§1.3); thinking on a model without it is a 400 (§4.1)."""
    think = body.get("think")
    if think is not None and not any(think is v or (isinstance(v, str) and think == v)
                                     for v in THINK_VALUES):
        raise OllamaError(400, INVALID_THINK.format(value=json_text(think)))
    if think not in (None, False) and not spec.has("thinking"):
        raise OllamaError(400, f'"{body["model"]}" does not support thinking')


def logprobs_wanted(emu: Emulator, body: dict[str, Any], top: int) -> int | None:
    """The top_logprobs count when ``logprobs`` is true on a version that knows it (§4.1, §12)."""
    return top if body.get("logprobs") is True and has_logprobs(emu.settings.version) else None


def top_logprobs(emu: Emulator, body: dict[str, Any], struct: str) -> int:
    return check_top_logprobs(body, struct) if has_logprobs(emu.settings.version) else 0


async def answer(emu: Emulator, body: dict[str, Any], spec: ModelSpec, plan: Plan, *,
                 chat: bool, path: str) -> Response:
    """Stream the planned answer (the default), or collect it with ``stream: false`` (§1.2)."""
    if plan.load_s:
        await asyncio.sleep(plan.load_s)  # Ollama loads the model before sending any byte
    lines = answer_lines(body["model"], plan, chat=chat, raw=body.get("raw") is True)
    if body.get("stream", True) is False:
        return CollectedResponse(lines, partial(merge_lines, chat=chat))

    def cancelled() -> None:
        emu.cancelled.append({"path": path, "model": spec.name, "ts": time.time()})

    return StreamingResponse(recorded(lines, cancelled), media_type=NDJSON)


async def chat(emu: Emulator, request: Request) -> Response:
    """POST /api/chat (§4.2)."""
    body = await read_body(request)
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise unmarshal_error(messages, "ChatRequest.messages", "[]api.Message")
    images = sum(decode_images(m.get("images"), "ChatRequest.messages.images")
                 for m in messages or [] if isinstance(m, dict))
    top = top_logprobs(emu, body, "ChatRequest")
    spec = require_model(emu, body, missing=OllamaError(400, "model is required"),
                         not_found="model '{name}' not found")
    if not messages and body.get("keep_alive") == 0:
        emu.unload(spec)
        return JSONResponse({"model": body["model"], "created_at": now_text(),
                             "message": {"role": "assistant", "content": ""}, "done": True,
                             "done_reason": "unload"})
    check_think(body, spec)
    if not spec.has("completion"):
        raise OllamaError(400, f'"{body["model"]}" does not support chat')
    if body.get("tools") and not spec.has("tools"):
        raise OllamaError(400, f"{qualified(spec.name)} does not support tools")
    options = check_options(body.get("options"), "ChatRequest")
    if not messages:
        return JSONResponse({"model": body["model"], "created_at": now_text(),
                             "message": {"role": "assistant", "content": ""}, "done": True,
                             "done_reason": "load"})
    if images and not spec.has("vision"):
        raise OllamaError(500, NO_VISION)
    plan = plan_answer(emu, spec, body, messages, options, chat=True,
                       logprobs=logprobs_wanted(emu, body, top))
    return await answer(emu, body, spec, plan, chat=True, path=request.url.path)


async def generate(emu: Emulator, request: Request) -> Response:
    """POST /api/generate (§4.1), or an image on the versions that generate them (§7)."""
    body = await read_body(request)
    images = decode_images(body.get("images"), "GenerateRequest.images")
    top = top_logprobs(emu, body, "GenerateRequest")
    spec = require_model(emu, body, missing=OllamaError(404, "model '' not found"),
                         not_found="model '{name}' not found")
    prompt = body.get("prompt") or ""
    if not prompt and body.get("keep_alive") == 0:
        emu.unload(spec)
        return JSONResponse({"model": body["model"], "created_at": now_text(), "response": "",
                             "done": True, "done_reason": "unload"})
    if spec.has("image"):
        if not has_image_generation(emu.settings.version):
            raise OllamaError(400, IMAGE_MODELS_UNSUPPORTED)
        return await generate_image(emu, request, body, spec)
    if body.get("raw") is True and (body.get("template") or body.get("system")
                                    or body.get("context")):
        raise OllamaError(400, RAW_CONFLICT)
    check_think(body, spec)
    if not spec.has("completion"):
        raise OllamaError(400, f'"{body["model"]}" does not support generate')
    if body.get("suffix") and not spec.has("insert"):
        raise OllamaError(400, f"{qualified(spec.name)} does not support insert")
    options = check_options(body.get("options"), "GenerateRequest")
    if not prompt:
        return JSONResponse({"model": body["model"], "created_at": now_text(), "response": "",
                             "done": True, "done_reason": "load"})
    if images and not spec.has("vision"):
        raise OllamaError(500, NO_VISION)
    message: dict[str, Any] = {"role": "user", "content": prompt}
    if images:
        message["images"] = body["images"]
    plan = plan_answer(emu, spec, body, [message], options, chat=False,
                       logprobs=logprobs_wanted(emu, body, top))
    return await answer(emu, body, spec, plan, chat=False, path=request.url.path)


async def generate_image(emu: Emulator, request: Request, body: dict[str, Any],
                         spec: ModelSpec) -> Response:
    """An image model on v0.14.3–v0.32.5: step progress lines, then the PNG (§7.2)."""
    options = check_options(body.get("options"), "GenerateRequest")
    width = int(body.get("width") or IMAGE_SIDE)
    height = int(body.get("height") or IMAGE_SIDE)
    if width > IMAGE_MAX_SIDE or height > IMAGE_MAX_SIDE:
        raise OllamaError(400, f"width and height must be <= {IMAGE_MAX_SIDE}")
    steps = int(body.get("steps") or IMAGE_STEPS)
    seed = f"{body.get('prompt')}:{options.get('seed')}"
    image = base64.b64encode(png(min(width, PNG_MAX_SIDE), min(height, PNG_MAX_SIDE), seed)).decode()

    async def lines() -> AsyncIterator[dict[str, Any]]:
        started = time.monotonic()
        for step in range(1, steps + 1):
            if emu.settings.token_delay_s:
                await asyncio.sleep(emu.settings.token_delay_s)
            yield {"model": body["model"], "created_at": now_text(), "response": "",
                   "done": False, "completed": step, "total": steps}
        m = metrics(started, 0, 0)
        yield {"model": body["model"], "created_at": now_text(), "response": "", "done": True,
               "done_reason": "stop", "total_duration": m["total_duration"],
               "load_duration": m["load_duration"], "image": image}

    if body.get("stream", True) is False:
        return CollectedResponse(lines(), lambda collected: collected[-1])

    def cancelled() -> None:
        emu.cancelled.append({"path": request.url.path, "model": spec.name, "ts": time.time()})

    return StreamingResponse(recorded(lines(), cancelled), media_type=NDJSON)


async def embed(emu: Emulator, request: Request) -> Response:
    """POST /api/embed (§4.3): only ``""``, ``[]`` or no input loads without embedding; ``[""]``
    is one input and gets one vector."""
    body = await read_body(request)
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw] if raw else []
    elif isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise OllamaError(400, "invalid input type")
        inputs = raw
    elif raw is None:
        inputs = []
    else:
        raise OllamaError(400, "invalid input type")
    spec = require_model(emu, body, missing=OllamaError(404, "model '' not found"),
                         not_found='model "{name}" not found, try pulling it first')
    check_options(body.get("options"), "EmbedRequest")
    if not inputs:
        return JSONResponse({"model": body["model"], "embeddings": []})
    started = time.monotonic()
    limit = spec.context_length or EMBED_CONTEXT
    tokens = [len(text.split()) + 2 for text in inputs]
    if body.get("truncate") is False and max(tokens) > limit:
        raise OllamaError(400, EMBED_TOO_LONG)
    dim = spec.embedding_length
    vectors = [embedding(text, dim) for text in inputs]
    wanted = body.get("dimensions")
    if isinstance(wanted, int) and 0 < wanted < dim:
        vectors = [normalise_vector(v[:wanted]) for v in vectors]
    m = metrics(started, sum(min(t, limit) for t in tokens), 0)
    return JSONResponse({"model": body["model"], "embeddings": vectors,
                         "total_duration": m["total_duration"], "load_duration": m["load_duration"],
                         "prompt_eval_count": m["prompt_eval_count"]})


async def embeddings_legacy(emu: Emulator, request: Request) -> Response:
    """POST /api/embeddings (§4.4): one prompt, one vector; an empty prompt gets ``[]``."""
    body = await read_body(request)
    spec = require_model(emu, body, missing=OllamaError(400, "model is required"),
                         not_found='model "{name}" not found, try pulling it first')
    prompt = body.get("prompt") or ""
    return JSONResponse({"embedding": embedding(prompt, spec.embedding_length) if prompt else []})
