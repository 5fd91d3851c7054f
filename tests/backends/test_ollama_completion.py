"""OpenAI legacy Completions ⇄ Ollama ``/api/generate`` translation, both ways, field by field
(pure functions: no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from pendra.backends.base import ModelInfo, system_fingerprint
from pendra.backends.ollama.completion import (CompletionTranslator, generate_requests,
                                               translator_for)
from pendra.errors import InvalidRequest

MODEL = "llama3.2:latest"


def one(**fields: Any) -> dict[str, Any]:
    [native] = generate_requests({"model": MODEL, "prompt": "p", **fields}, MODEL, num_ctx=8192)
    return native


def test_the_prompt_goes_raw_with_defaults_and_num_ctx() -> None:
    """A bare request: the prompt as written (raw), streamed, OpenAI's default of 16 tokens and
    the injected num_ctx; nothing else."""
    assert one() == {"model": MODEL, "prompt": "p", "stream": True, "raw": True,
                     "options": {"num_predict": 16, "num_ctx": 8192}}


def test_each_openai_field_maps_to_its_option() -> None:
    """max_tokens → num_predict; sampling fields, seed and stop keep their names; a string stop
    becomes a list; the client's options win, num_ctx included."""
    native = one(max_tokens=5, temperature=0.3, top_p=0.8, top_k=7, min_p=0.1, seed=3,
                 presence_penalty=1.5, frequency_penalty=-1.0, stop="END",
                 options={"num_ctx": 1024, "temperature": 0.9, "repeat_penalty": 1.1},
                 keep_alive="5m", user="someone")
    assert native["options"] == {"num_predict": 5, "temperature": 0.9, "top_p": 0.8, "top_k": 7,
                                 "min_p": 0.1, "seed": 3, "presence_penalty": 1.5,
                                 "frequency_penalty": -1.0, "stop": ["END"], "num_ctx": 1024,
                                 "repeat_penalty": 1.1}
    assert native["keep_alive"] == "5m" and "user" not in native


def test_suffix_uses_the_template_and_needs_insert() -> None:
    """A suffix turns raw off (the model's template places it); a model known to lack the insert
    capability is refused naming suffix; raw: true with a suffix is refused; raw: false alone
    applies the template."""
    [fim] = generate_requests({"model": MODEL, "prompt": "a", "suffix": "b"}, MODEL,
                              num_ctx=None, capabilities=("completion", "insert"))
    assert fim["suffix"] == "b" and fim["raw"] is False and "num_ctx" not in fim["options"]
    with pytest.raises(InvalidRequest) as no_insert:
        generate_requests({"model": MODEL, "prompt": "a", "suffix": "b"}, MODEL, num_ctx=None,
                          capabilities=("completion",))
    assert no_insert.value.param == "suffix" and "insert" in no_insert.value.message
    with pytest.raises(InvalidRequest) as dropped:
        one(suffix="b", raw=True)
    assert dropped.value.param == "suffix"
    assert one(raw=False)["raw"] is False


def test_logprobs_and_thinking_models() -> None:
    """logprobs N → logprobs true and top_logprobs N (0: none asked); a thinking model is told
    not to think."""
    assert (one(logprobs=3)["logprobs"], one(logprobs=3)["top_logprobs"]) == (True, 3)
    assert one(logprobs=0)["logprobs"] is True and "top_logprobs" not in one(logprobs=0)
    [native] = generate_requests({"model": "qwen3:8b", "prompt": "p"}, "qwen3:8b", num_ctx=None,
                                 capabilities=("completion", "thinking"))
    assert native["think"] is False
    assert "think" not in one()


def test_prompts_times_n_in_openai_order_with_seeds() -> None:
    """Each prompt n times, prompt-major (index i*n + j); generation j of a prompt uses seed + j."""
    natives = generate_requests({"model": MODEL, "prompt": ["x", "y"], "n": 3, "seed": 100},
                                MODEL, num_ctx=None)
    assert [(n["prompt"], n["options"]["seed"]) for n in natives] == [
        ("x", 100), ("x", 101), ("x", 102), ("y", 100), ("y", 101), ("y", 102)]
    unseeded = generate_requests({"model": MODEL, "prompt": "x", "n": 2}, MODEL, num_ctx=None)
    assert all("seed" not in n["options"] for n in unseeded)


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 3, "best_of": 2}, "best_of"), ({"best_of": 2, "stream": True}, "best_of"),
    ({"prompt": ["a"] * 3, "best_of": 50}, "best_of"), ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"echo": True, "logprobs": 0}, "logprobs"), ({"prompt": [1, 2]}, "prompt"),
    ({"prompt": []}, "prompt"), ({"n": 200}, "n"), ({"prompt": ["a"] * 65, "n": 2}, "n"),
    ({"logprobs": 6}, "logprobs"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": -1}, "max_tokens"), ({"max_tokens": 0}, "max_tokens"), ({"options": {"num_ctx": "big"}}, "options.num_ctx")])
def test_what_cannot_be_served_is_refused_naming_the_field(fields: dict[str, Any],
                                                           param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        generate_requests({"model": MODEL, "prompt": "p", **fields}, MODEL, num_ctx=None)
    assert refused.value.param == param


def test_best_of_equal_to_n_and_empty_logit_bias_are_fine() -> None:
    natives = generate_requests({"model": MODEL, "prompt": "p", "n": 2, "best_of": 2,
                                 "logit_bias": {}}, MODEL, num_ctx=None)
    assert len(natives) == 2 and all("logprobs" not in n for n in natives)


def test_best_of_runs_every_candidate_with_logprobs() -> None:
    """best_of above n runs best_of generations per prompt (seed + j), with log probabilities on
    to rank them, even when the client did not ask for them."""
    natives = generate_requests({"model": MODEL, "prompt": ["a", "b"], "n": 1, "best_of": 3,
                                 "seed": 5}, MODEL, num_ctx=None)
    assert [(n["prompt"], n["options"]["seed"]) for n in natives] == [
        ("a", 5), ("a", 6), ("a", 7), ("b", 5), ("b", 6), ("b", 7)]
    assert all(n["logprobs"] is True and "top_logprobs" not in n for n in natives)


# --- the way back ----------------------------------------------------------------------------------


def line(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "created_at": "2026-01-01T00:00:00Z", "response": text,
            "done": False, **extra}


def final(reason: str = "stop", prompt: int = 4, generated: int = 2) -> dict[str, Any]:
    return {**line(""), "done": True, "done_reason": reason, "prompt_eval_count": prompt,
            "eval_count": generated}


def run(translator: CompletionTranslator, generations: list[tuple[str, list[dict[str, Any]]]]
        ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, (prompt, lines) in enumerate(generations):
        out += translator.begin(index, prompt)
        for native in lines:
            out += translator.feed(native)
    return out + translator.closing()


def test_whole_answer_shape() -> None:
    """Not streamed: nothing until the end, then one text_completion with every choice in index
    order, finish reasons (length when num_predict ran out), summed usage, the fingerprint."""
    t = translator_for({"prompt": "p"}, MODEL, fingerprint="fp_abc")
    assert run(t, [("p", [line("Hel"), line("lo"), final()]),
                   ("q", [line("x"), final("length", 5, 1)])]) == []
    whole = t.completion()
    assert whole["id"].startswith("cmpl-") and whole["object"] == "text_completion"
    assert whole["model"] == MODEL and whole["system_fingerprint"] == "fp_abc"
    assert whole["choices"] == [
        {"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "stop"},
        {"text": "x", "index": 1, "logprobs": None, "finish_reason": "length"}]
    assert whole["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert (t.usage.total_tokens, t.finish_reason) == (12, "length")


def test_stream_chunks_echo_finish_and_usage() -> None:
    """Streamed: the echoed prompt first, a chunk per piece, a finish chunk per choice, then the
    usage chunk (choices []) when include_usage; every chunk is a text_completion."""
    t = translator_for({"prompt": "p", "stream": True, "echo": True,
                        "stream_options": {"include_usage": True}}, MODEL)
    chunks = run(t, [("Say: ", [line("hi"), final()])])
    assert [c["choices"] and (c["choices"][0]["text"], c["choices"][0]["finish_reason"])
            for c in chunks] == [("Say: ", None), ("hi", None), ("", "stop"), []]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1 and "system_fingerprint" not in chunks[0]
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    whole = translator_for({"prompt": "p", "echo": True}, MODEL)
    run(whole, [("Say: ", [line("hi"), final()])])
    assert whole.completion()["choices"][0]["text"] == "Say: hi"


def test_logprobs_in_the_legacy_shape() -> None:
    """Native logprobs become tokens / token_logprobs / top_logprobs (alternatives plus the
    sampled token) / text_offset (into the choice's text), per chunk and whole."""
    lp = [{"token": "He", "logprob": -0.5,
           "top_logprobs": [{"token": "He", "logprob": -0.5}, {"token": "Ha", "logprob": -2.0}]}]
    stream = translator_for({"prompt": "p", "stream": True, "logprobs": 1}, MODEL)
    chunks = run(stream, [("p", [line("He", logprobs=lp),
                                 line("llo", logprobs=[{"token": "llo", "logprob": -0.1}]),
                                 final()])])
    assert chunks[0]["choices"][0]["logprobs"] == {
        "tokens": ["He"], "token_logprobs": [-0.5], "top_logprobs": [{"He": -0.5, "Ha": -2.0}],
        "text_offset": [0]}
    assert chunks[1]["choices"][0]["logprobs"]["text_offset"] == [2]
    assert chunks[1]["choices"][0]["logprobs"]["top_logprobs"] == [{"llo": -0.1}]
    whole = translator_for({"prompt": "p", "logprobs": 1}, MODEL)
    run(whole, [("p", [line("He", logprobs=lp), line("llo", logprobs=[
        {"token": "llo", "logprob": -0.1}]), final()])])
    assert whole.completion()["choices"][0]["logprobs"] == {
        "tokens": ["He", "llo"], "token_logprobs": [-0.5, -0.1],
        "top_logprobs": [{"He": -0.5, "Ha": -2.0}, {"llo": -0.1}], "text_offset": [0, 2]}


def test_best_of_returns_the_n_best_per_prompt_renumbered() -> None:
    """Each prompt's candidates are ranked by mean log probability per token; the n best come
    back best first as indices i*n + k; logprobs stay out unless asked for; usage counts all."""
    def cand(value: float, text: str) -> list[dict[str, Any]]:
        return [line(text, logprobs=[{"token": text, "logprob": value}]), final(prompt=1,
                                                                                 generated=1)]

    t = translator_for({"prompt": ["p", "q"], "n": 2, "best_of": 3}, MODEL)
    run(t, [("p", cand(-3.0, "p-worst")), ("p", cand(-0.1, "p-best")), ("p", cand(-1.0, "p-mid")),
            ("q", cand(-0.5, "q-a")), ("q", cand(-0.5, "q-b")), ("q", cand(-9.0, "q-c"))])
    whole = t.completion()
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [
        (0, "p-best"), (1, "p-mid"), (2, "q-a"), (3, "q-b")]
    assert all(c["logprobs"] is None for c in whole["choices"])
    assert whole["usage"]["completion_tokens"] == 6
    asked = translator_for({"prompt": "p", "best_of": 2, "logprobs": 0}, MODEL)
    run(asked, [("p", cand(-2.0, "x")), ("p", cand(-1.0, "y"))])
    [best] = asked.completion()["choices"]
    assert best["text"] == "y" and best["logprobs"]["token_logprobs"] == [-1.0]


def test_system_fingerprint_is_stable_per_backend_build_and_model() -> None:
    """The same backend version and model give the same fingerprint; a new version or digest a
    different one."""
    model = ModelInfo(id=MODEL, backend="ollama", digest="abc")
    first = system_fingerprint("ollama", "0.32.15", model)
    assert first == system_fingerprint("ollama", "0.32.15", model) and first.startswith("fp_")
    assert first != system_fingerprint("ollama", "0.33.0", model)
    assert first != system_fingerprint("ollama", "0.32.15",
                                       ModelInfo(id=MODEL, backend="ollama", digest="abd"))
