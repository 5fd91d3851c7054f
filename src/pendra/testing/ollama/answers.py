"""One chat or generate answer: planned from the request, then told line by line.

The plan applies Ollama's rules to the request (shared/reference/ollama-api.md): the context
window is ``options.num_ctx`` or the default, capped at the model's trained length (§5.1, §5.2); a
prompt longer than it is cut to half the window plus two tokens, or refused with ``shift: false``
(§5.3); ``num_predict`` ends the answer with ``done_reason: "length"`` and a stop sequence with
``"stop"`` (§4.1); ``format`` is ``"json"`` or a schema (§1.3); a thinking model thinks unless told
not to (§4.1); a tools request gets one tool call (§4.2); log probabilities ride on every token line
when asked (§4.2). The lines are NDJSON objects: content pieces, the tool-call line, then the final
``done: true`` line with the six metrics (and ``context`` for generate), or a trailing
``{"error": …}`` when the runner dies (§1.2).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pendra.testing.ollama.content import (count_prompt_tokens, logprob, reply_tokens, schema_value,
                                           steering_of, tool_call_id)
from pendra.testing.ollama.facts import INVALID_FORMAT, PROMPT_TOO_LONG, RUNNER_STOPPED
from pendra.testing.ollama.models import ModelSpec
from pendra.testing.ollama.state import Emulator
from pendra.testing.ollama.wire import OllamaError, json_text, metrics, now_text

THINKING = "Let me think about this step by step.".split()
# The deprecated `context` of generate's final line (§4.1); its value is illustrative.
CONTEXT = [128006, 9125, 128007, 271]


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
    top_logprobs: int | None = None  # None: no logprobs; else alternatives per token


def plan_answer(emu: Emulator, spec: ModelSpec, body: dict[str, Any], messages: list[dict[str, Any]],
                options: dict[str, Any], *, chat: bool, logprobs: int | None) -> Plan:
    """What the model will say. ``logprobs`` is the top_logprobs count when they were asked for."""
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
    thinking = THINKING if spec.has("thinking") and body.get("think") is not False else []
    tools = body.get("tools") or []
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
    elif fmt not in (None, ""):
        raise OllamaError(500, INVALID_FORMAT.format(value=json.dumps(json_text(fmt))))
    else:
        tokens = reply_tokens(text, steer.tokens, len(last.get("images") or []))
    done_reason = "stop"
    limit = options.get("num_predict")
    if isinstance(limit, int) and limit >= 0 and len(tokens) > limit:
        tokens, done_reason = tokens[:limit], "length"
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
                load_s=steer.load_s, stall_after=steer.stall_after, top_logprobs=logprobs)


def _piece_line(model: str, kind: str, piece: str, *, chat: bool) -> dict[str, Any]:
    """A ``done: false`` line carrying one piece of thinking or content."""
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": piece if kind == "content" else ""}
        if kind == "thinking":
            message["thinking"] = piece
        return {"model": model, "created_at": now_text(), "message": message, "done": False}
    line: dict[str, Any] = {"model": model, "created_at": now_text(),
                            "response": piece if kind == "content" else "", "done": False}
    if kind == "thinking":
        line["thinking"] = piece
    return line


async def answer_lines(model: str, plan: Plan, *, chat: bool,
                       raw: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Every NDJSON line of one answer (the last is done:true, or an error line; generate's
    carries the deprecated ``context`` unless the request was ``raw``, §4.1)."""
    started = time.monotonic()
    sent = 0
    pieces = [("thinking", t if i == 0 else " " + t) for i, t in enumerate(plan.thinking)]
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
        line = _piece_line(model, kind, piece, chat=chat)
        if plan.top_logprobs is not None:
            line["logprobs"] = [logprob(piece, plan.top_logprobs)]
        yield line
    if plan.error_after is not None:
        yield {"error": RUNNER_STOPPED}  # the runner died before finishing
        return
    if plan.tool_calls:
        yield {"model": model, "created_at": now_text(),
               "message": {"role": "assistant", "content": "", "tool_calls": plan.tool_calls},
               "done": False}
    final: dict[str, Any] = {"model": model, "created_at": now_text()}
    if chat:
        final["message"] = {"role": "assistant", "content": ""}
    else:
        final["response"] = ""
    final.update({"done": True, "done_reason": plan.done_reason})
    if not chat and not raw:
        final["context"] = CONTEXT
    final.update(metrics(started, plan.prompt_tokens, len(plan.tokens) + len(plan.thinking)))
    yield final


def merge_lines(lines: list[dict[str, Any]], *, chat: bool) -> dict[str, Any]:
    """The non-streaming answer: concatenated text, union of tool calls and of logprobs, the final
    line's metrics (§4.1, §4.2)."""
    final = dict(lines[-1])
    if chat:
        content = "".join(line["message"].get("content", "") for line in lines)
        thinking = "".join(line["message"].get("thinking", "") for line in lines)
        calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(line.get("response", "") for line in lines)
        thinking = "".join(line.get("thinking", "") for line in lines)
        if thinking:
            final["thinking"] = thinking
    probabilities = [entry for line in lines for entry in line.get("logprobs", [])]
    if probabilities:
        final["logprobs"] = probabilities
    return final
