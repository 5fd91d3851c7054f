"""OpenAI bodies in and out of an OpenAI-compatible server, with no I/O.

Rules:
- A request goes to the backend **unchanged except the model name** (the backend's own id) and,
  for a stream, ``stream_options.include_usage`` set to true so that the server reports the
  tokens Pendra records; the usage chunk is passed on to the client only when it asked for it
  itself. Nothing else is added: ``num_ctx`` is Ollama's rule only, and tools, ``response_format``,
  ``logprobs`` and every other field reach the backend exactly as the client sent them.
- Answers come back as the backend sent them, with ``model`` set to the name the client asked for.
  An answer that is not the OpenAI shape (no ``choices`` list, no ``data`` list) fails with 502.
- Usage: ``prompt_tokens`` and ``completion_tokens`` from the answer's ``usage`` (absent → 0); the
  finish reason is the last one a choice reported.
"""

from __future__ import annotations

from typing import Any

from pendra.backends.base import Usage
from pendra.errors import BackendRejected


def chat_request(body: dict[str, Any], native_id: str) -> dict[str, Any]:
    out = dict(body)
    out["model"] = native_id
    if body.get("stream"):
        options = body.get("stream_options")
        out["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                 "include_usage": True}
    return out


def client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def usage_of(data: Any) -> Usage | None:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(prompt_tokens=prompt if isinstance(prompt, int) and prompt >= 0 else 0,
                 completion_tokens=completion if isinstance(completion, int) and completion >= 0
                 else 0)


class ChunkRelay:
    """Turns a backend's stream of ``chat.completion.chunk`` events into the client's."""

    def __init__(self, *, model: str, wants_usage: bool, name: str) -> None:
        self.model = model
        self.wants_usage = wants_usage
        self.name = name
        self.usage = Usage()
        self.finish_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk to send on (None when it is a usage chunk the client did not ask for)."""
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise BackendRejected(f"{self.name} sent a stream event without a choices list",
                                  status=502)
        for choice in choices:
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        usage = usage_of(event)
        if usage is not None:
            self.usage = usage
        out = dict(event)
        out["model"] = self.model
        if not self.wants_usage:
            if not choices:
                return None  # the final usage chunk the client did not ask for
            out.pop("usage", None)
        return out


def completion(answer: Any, *, model: str, name: str) -> tuple[dict[str, Any], Usage, str | None]:
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise BackendRejected(f"{name} answered a chat completion without a choices list",
                              status=502)
    out = dict(answer)
    out["model"] = model
    finish = None
    for choice in answer["choices"]:
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            finish = choice["finish_reason"]
    return out, usage_of(answer) or Usage(), finish


def embeddings(answer: Any, *, model: str, name: str) -> tuple[dict[str, Any], Usage]:
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise BackendRejected(f"{name} answered embeddings without a data list", status=502)
    out = dict(answer)
    out["model"] = model
    usage = usage_of(answer) or Usage()
    return out, Usage(prompt_tokens=usage.prompt_tokens)
