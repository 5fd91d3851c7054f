"""OpenAI legacy Completions ⇄ Ollama's native ``/api/generate``, both ways, with no I/O.

Requests (``generate_requests``): one native body per generation — each prompt of ``prompt`` (a
string or a list of strings) times ``best_of`` (default ``n``) — always streamed from Ollama.
Choice ``i * n + j`` is prompt ``i``'s ``j``-th choice, as OpenAI numbers them. With ``best_of``
above ``n`` (never streamed) each prompt's ``best_of`` generations run with log probabilities on
and the ``n`` with the highest mean log probability per token are returned, best first (OpenAI's
rule); usage counts every generation. The rules:
- **raw**: the prompt is sent exactly as written (``raw: true``, no chat template), as OpenAI's
  completions endpoint does — except for fill-in-the-middle: with a ``suffix`` the model's own
  template is what places the prompt and the suffix around its FIM tokens (Ollama ignores
  ``suffix`` in raw mode), so ``raw`` is false there. A client may ask for the model's template
  with ``raw: false`` (Pendra's extra; a ``suffix`` with ``raw: true`` is refused: it would be
  dropped). A ``suffix`` needs a model whose template has a suffix slot (Ollama's ``insert``
  capability); any other model is refused with 400 naming ``suffix``.
- ``max_tokens`` → ``options.num_predict`` (OpenAI's default of 16 when absent or null);
  ``temperature``, ``top_p``, ``seed``, ``presence_penalty``, ``frequency_penalty``, ``stop`` →
  options of the same name, and ``top_k``/``min_p`` likewise; the client's own ``options`` win, and
  ``options.num_ctx`` is injected from discovery unless the client sent its own. With a ``seed``
  and several generations per prompt, generation ``j`` of a prompt uses ``seed + j``: they differ
  from each other and the same request gives the same answer.
- ``logprobs: N`` → ``logprobs: true`` and ``top_logprobs: N``; a model with the ``thinking``
  capability is told ``think: false`` (a completion is the text as generated, not a chat answer
  split into thinking and content).
- What cannot be done is refused (InvalidRequest naming the field), never ignored: ``best_of``
  below ``n`` or, above it, streamed; a non-empty ``logit_bias``, ``echo`` with ``logprobs`` and ``max_tokens`` 0
  (Ollama gives no log probabilities for prompt tokens, and reads ``num_predict`` 0 as no limit).

Answers (``CompletionTranslator``): native lines of each generation in turn become
``text_completion`` chunks (stream: the echoed prompt first when ``echo``, a chunk per piece of
text, a chunk with ``finish_reason`` closing each choice, then the usage chunk when
``stream_options.include_usage``), or one ``text_completion`` (not stream) with the choices in
index order. ``logprobs`` take OpenAI's legacy shape — ``tokens``, ``token_logprobs``,
``top_logprobs`` (one ``{token: logprob}`` per position: the alternatives Ollama gave plus the
sampled token, as OpenAI returns up to N + 1) and ``text_offset`` (each token's character offset
in the choice's whole text, the echoed prompt included) — or null when not asked for. Usage adds
up every generation's counts as Ollama reports them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from pendra.backends.base import Usage
from pendra.backends.ollama.options import check_options
from pendra.backends.ollama.translate import _number, _stop, include_usage
from pendra.errors import InvalidRequest

# OpenAI's default max_tokens for completions.
DEFAULT_MAX_TOKENS = 16
# Choices one request may ask for (prompts × n): OpenAI's bound on n.
MAX_CHOICES = 128
# OpenAI's bound on logprobs for completions.
MAX_LOGPROBS = 5
# OpenAI sampling fields → Ollama options, with their ranges (as chat's).
_SAMPLING: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0, 2), "top_p": (float, 0, 1),
    "frequency_penalty": (float, -2, 2), "presence_penalty": (float, -2, 2),
    "top_k": (int, 0, 2**31 - 1), "min_p": (float, 0, 1)}


def prompts_of(body: dict[str, Any]) -> list[str]:
    """The prompts: a string is one, a list of strings several (each served)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise InvalidRequest("prompt must be a string or a non-empty list of strings "
                         "(token arrays are not supported)", param="prompt")


def choices_per_prompt(body: dict[str, Any]) -> int:
    """``n``: the choices returned per prompt."""
    return _number(body, "n", int, 1, MAX_CHOICES) or 1


def candidates_per_prompt(body: dict[str, Any]) -> int:
    """``best_of`` (default ``n``): the generations run per prompt, of which the ``n`` with the
    highest log probability per token are returned (OpenAI's rule; never streamed)."""
    n = choices_per_prompt(body)
    best_of = _number(body, "best_of", int, 1, MAX_CHOICES)
    if best_of is not None and best_of < n:
        raise InvalidRequest(f"best_of ({best_of}) must be at least n ({n})", param="best_of")
    if best_of is not None and best_of > n and body.get("stream"):
        raise InvalidRequest("best_of above n cannot be streamed (the best are known only at "
                             "the end)", param="best_of")
    count = best_of or n
    if len(prompts_of(body)) * count > MAX_CHOICES:
        raise InvalidRequest(f"prompts × {'best_of' if best_of else 'n'} is at most "
                             f"{MAX_CHOICES}", param="best_of" if best_of else "n")
    return count


def logprobs_of(body: dict[str, Any]) -> int | None:
    """``logprobs`` (the alternatives per token), or None when not asked for."""
    return _number(body, "logprobs", int, 0, MAX_LOGPROBS)


def _raw(body: dict[str, Any]) -> bool:
    raw = body.get("raw")
    if raw is not None and not isinstance(raw, bool):
        raise InvalidRequest("raw must be true or false", param="raw")
    if body.get("suffix"):
        if raw is True:
            raise InvalidRequest("suffix needs the model's template (raw: false): in raw mode "
                                 "Ollama would drop it", param="suffix")
        return False
    return True if raw is None else raw


def generate_requests(body: dict[str, Any], model: str, *, num_ctx: int | None,
                      capabilities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The native ``/api/generate`` bodies, one per choice in index order (see the rules)."""
    prompts = prompts_of(body)
    n = candidates_per_prompt(body)
    ranking = n > choices_per_prompt(body)
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise InvalidRequest("suffix must be a string", param="suffix")
    if suffix and capabilities and "insert" not in capabilities:
        raise InvalidRequest(f"model '{model}' does not support fill-in-the-middle: its template "
                             "has no suffix slot (Ollama's 'insert' capability); leave suffix out "
                             "or use a code model that has it", param="suffix")
    if body.get("logit_bias"):
        raise InvalidRequest("logit_bias is not supported by Ollama", param="logit_bias")
    logprobs = logprobs_of(body)
    if body.get("echo") is True and logprobs is not None:
        raise InvalidRequest("echo with logprobs is not supported: Ollama gives no log "
                             "probabilities for prompt tokens", param="logprobs")
    options: dict[str, Any] = {}
    max_tokens = _number(body, "max_tokens", int, 0, 2**31 - 1)
    if max_tokens == 0:  # OpenAI's "echo the prompt only"; Ollama reads num_predict 0 as no limit
        raise InvalidRequest("max_tokens 0 is not supported (it would echo the prompt's log "
                             "probabilities, which Ollama does not give); use at least 1",
                             param="max_tokens")
    options["num_predict"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    for key, (kind, low, high) in _SAMPLING.items():
        if (value := _number(body, key, kind, low, high)) is not None:
            options[key] = value
    seed = _number(body, "seed", int, -(2**63), 2**63 - 1)
    if seed is not None:
        options["seed"] = seed
    if (stop := _stop(body)) is not None:
        options["stop"] = stop
    client_options = check_options(body.get("options") or {})
    options.update(client_options)  # the client's own options always win
    if num_ctx and "num_ctx" not in client_options:
        options["num_ctx"] = num_ctx
    common: dict[str, Any] = {"model": model, "stream": True, "raw": _raw(body)}
    if suffix:
        common["suffix"] = suffix
    if "thinking" in capabilities:
        common["think"] = False
    keep_alive = body.get("keep_alive")
    if keep_alive is not None:
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float):
            raise InvalidRequest("keep_alive must be a duration (\"5m\") or seconds",
                                 param="keep_alive")
        common["keep_alive"] = keep_alive
    if logprobs is not None or ranking:  # best_of ranks by the tokens' log probabilities
        common["logprobs"] = True
        if logprobs:
            common["top_logprobs"] = logprobs
    natives = []
    for prompt in prompts:
        for j in range(n):
            opts = dict(options)
            if j and isinstance(opts.get("seed"), int):
                opts["seed"] = opts["seed"] + j
            natives.append({**common, "prompt": prompt, "options": opts})
    return natives


@dataclass
class _Choice:
    index: int
    prompt: str
    text: list[str] = field(default_factory=list)
    offset: int = 0  # characters of the choice's text so far (echoed prompt included)
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    finish_reason: str | None = None


def _legacy_logprobs(entries: Any, start: int) -> tuple[dict[str, list[Any]], int]:
    """Native Logprobs (``{token, logprob, top_logprobs?}``) in OpenAI's legacy shape, offsets
    counted from ``start``; and the offset after them."""
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                 "text_offset": []}
    offset = start
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        token = str(entry.get("token", ""))
        value = float(entry.get("logprob") or 0)
        top: dict[str, float] = {}
        for alt in entry.get("top_logprobs") or []:
            if isinstance(alt, dict):
                top.setdefault(str(alt.get("token", "")), float(alt.get("logprob") or 0))
        top.setdefault(token, value)  # OpenAI always includes the sampled token
        out["tokens"].append(token)
        out["token_logprobs"].append(value)
        out["top_logprobs"].append(top)
        out["text_offset"].append(offset)
        offset += len(token)
    return out, offset


@dataclass
class CompletionTranslator:
    """Turns each generation's native lines into ``text_completion`` chunks (stream) or one
    ``text_completion`` (not stream). Call ``begin(index, prompt)`` before each generation's
    lines."""

    model: str
    stream: bool
    include_usage: bool = False
    logprobs: bool = False  # the client asked for them
    echo: bool = False
    fingerprint: str | None = None
    n: int = 1  # choices returned per prompt
    best_of: int = 1  # generations per prompt (ranked when above n; logprobs are then collected)
    id: str = field(default_factory=lambda: "cmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    _choices: list[_Choice] = field(default_factory=list)

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "object": "text_completion",
                                "created": self.created, "model": self.model, "choices": choices}
        if self.fingerprint:
            data["system_fingerprint"] = self.fingerprint
        return data

    def _chunk(self, choice: _Choice, text: str, logprobs: dict[str, Any] | None = None,
               finish: str | None = None) -> dict[str, Any]:
        return self._envelope([{"text": text, "index": choice.index,
                                "logprobs": logprobs, "finish_reason": finish}])

    def begin(self, index: int, prompt: str) -> list[dict[str, Any]]:
        """Start choice ``index`` (of ``prompt``); its echoed prompt when streaming with echo."""
        choice = _Choice(index, prompt)
        self._choices.append(choice)
        if self.echo:
            choice.text.append(prompt)
            choice.offset = len(prompt)
            if self.stream and prompt:
                return [self._chunk(choice, prompt)]
        return []

    def feed(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one native line of the current generation (an ``error`` line is raised by
        the client before it gets here)."""
        choice = self._choices[-1]
        out: list[dict[str, Any]] = []
        piece = line.get("response") or ""
        legacy = None
        if (self.logprobs or self.best_of > self.n) and line.get("logprobs"):
            legacy, _ = _legacy_logprobs(line["logprobs"], choice.offset)
            choice.tokens += legacy["tokens"]
            choice.token_logprobs += legacy["token_logprobs"]
            choice.top_logprobs += legacy["top_logprobs"]
            choice.text_offset += legacy["text_offset"]
        if piece or legacy:
            choice.text.append(piece)
            out.append(self._chunk(choice, piece, legacy if self.logprobs else None))
        choice.offset += len(piece)
        if line.get("done"):
            self.usage.prompt_tokens += int(line.get("prompt_eval_count") or 0)
            self.usage.completion_tokens += int(line.get("eval_count") or 0)
            choice.finish_reason = "length" if line.get("done_reason") == "length" else "stop"
            self.finish_reason = choice.finish_reason
            out.append(self._chunk(choice, "", None, choice.finish_reason))
        return out if self.stream else []

    def closing(self) -> list[dict[str, Any]]:
        """What ends a stream after the last generation: the usage chunk, when asked for."""
        if self.stream and self.include_usage:
            return [{**self._envelope([]), "usage": self.usage.to_dict()}]
        return []

    def _chosen(self) -> list[_Choice]:
        """The choices to return, in index order: all of them, or with ``best_of`` above ``n``
        each prompt's ``n`` best by mean log probability per token (ties: the earlier), renumbered
        ``i * n + k``."""
        ordered = sorted(self._choices, key=lambda c: c.index)
        if self.best_of <= self.n:
            return ordered
        chosen: list[_Choice] = []
        for start in range(0, len(ordered), self.best_of):
            group = ordered[start:start + self.best_of]
            ranked = sorted(group, key=lambda c: (-_mean(c.token_logprobs), c.index))
            for k, choice in enumerate(ranked[:self.n]):
                choice.index = start // self.best_of * self.n + k
                chosen.append(choice)
        return chosen

    def completion(self) -> dict[str, Any]:
        choices = []
        for choice in self._chosen():
            logprobs = None
            if self.logprobs:
                logprobs = {"tokens": choice.tokens, "token_logprobs": choice.token_logprobs,
                            "top_logprobs": choice.top_logprobs,
                            "text_offset": choice.text_offset}
            choices.append({"text": "".join(choice.text), "index": choice.index,
                            "logprobs": logprobs, "finish_reason": choice.finish_reason or "stop"})
        return {**self._envelope(choices), "usage": self.usage.to_dict()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def translator_for(body: dict[str, Any], model: str, *,
                   fingerprint: str | None = None) -> CompletionTranslator:
    return CompletionTranslator(model=model, stream=bool(body.get("stream")),
                                include_usage=include_usage(body),
                                logprobs=logprobs_of(body) is not None,
                                echo=body.get("echo") is True, fingerprint=fingerprint,
                                n=choices_per_prompt(body), best_of=candidates_per_prompt(body))
