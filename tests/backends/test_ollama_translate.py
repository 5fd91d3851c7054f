"""The OpenAI → Ollama translation refuses a malformed body that slipped past the control plane
with ``InvalidRequest`` naming the field — never a TypeError/AttributeError (which became a 500,
a 502 and a retry on another worker) — and never forwards an Ollama option of the wrong type."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from pendra.backends.ollama import translate
from pendra.backends.ollama.discovery import served_capabilities
from pendra.backends.ollama.options import OPTIONS, check_options
from pendra.errors import InvalidRequest

HELLO = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HELLO} | fields


@pytest.mark.parametrize(("body", "param"), [
    (chat(stop=5), "stop"),
    (chat(stop=["a"] * 5), "stop"),
    (chat(messages=[{"role": "assistant", "tool_calls": ["x"]}]), "messages[0].tool_calls[0].function"),
    (chat(messages=[{"role": "assistant", "tool_calls": "x"}]), "messages[0].tool_calls"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=True), "temperature"),
    (chat(max_tokens="ten"), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(seed=1.5), "seed"),
    (chat(options={"num_ctx": -1}), "options.num_ctx"),
    (chat(options={"num_ctx": "8192"}), "options.num_ctx"),
    (chat(options={"stop": "x"}), "options.stop"),
    (chat(options="x"), "options"),
    (chat(tools="x"), "tools"),
    (chat(response_format="x"), "response_format"),
    (chat(response_format={"type": "json_schema", "json_schema": "x"}),
     "response_format.json_schema.schema"),
    (chat(reasoning_effort=["x"]), "reasoning_effort"),
    (chat(keep_alive=[1]), "keep_alive"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_chat_bodies_are_invalid_requests_naming_the_field(body: dict[str, Any],
                                                                     param: str) -> None:
    """Each malformed field is an InvalidRequest (400 on the wire) with ``param`` set."""
    with pytest.raises(InvalidRequest) as caught:
        translate.chat_request(body, "m", num_ctx=4096)
    assert caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize("stream_options", ["x", 5, ["include_usage"]])
def test_stream_options_that_are_not_an_object_are_refused(stream_options: Any) -> None:
    """``stream_options: "x"`` used to raise AttributeError in the worker."""
    with pytest.raises(InvalidRequest) as caught:
        translate.include_usage(chat(stream_options=stream_options))
    assert caught.value.param == "stream_options"


def test_well_typed_fields_still_map_to_ollama() -> None:
    """The checks change nothing for a good body: OpenAI fields become options, the client's
    options win, num_ctx is injected unless given."""
    native = translate.chat_request(chat(max_tokens=5, temperature=0.5, stop="x", seed=3,
                                         options={"top_k": 3, "temperature": 0.1}),
                                    "m", num_ctx=4096)
    assert native["options"] == {"num_predict": 5, "temperature": 0.1, "seed": 3, "stop": ["x"],
                                 "top_k": 3, "num_ctx": 4096}
    assert translate.include_usage(chat(stream_options={"include_usage": True}))
    assert not translate.include_usage(chat())


def test_options_table_checks_types_and_ranges() -> None:
    """Known options need their type and range (bool is not a number); unknown keys pass;
    explicit nulls are dropped rather than forwarded."""
    assert check_options({"num_ctx": 1, "top_p": 1, "unknown": "x", "seed": None}) == {
        "num_ctx": 1, "top_p": 1, "unknown": "x"}
    for bad in ({"num_ctx": 0}, {"num_ctx": True}, {"top_p": 1.5}, {"mirostat": 3},
                {"use_mmap": 1}, {"num_predict": 2.5}):
        with pytest.raises(InvalidRequest):
            check_options(bad)
    assert {"num_ctx", "num_predict", "temperature", "stop"} <= set(OPTIONS)


def test_embed_dimensions_must_be_a_positive_integer() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate.embed_request({"input": "x", "dimensions": "8"}, "m")
    assert caught.value.param == "dimensions"


@pytest.mark.parametrize(("version", "image", "audio"),
                         [("0.20.0", True, True), ("0.32.6", False, True), ("0.19.9", True, False),
                          ("0.14.2", False, False), ("nonsense", False, False)])
def test_image_and_audio_capabilities_only_where_ollama_serves_them(version: str, image: bool,
                                                                    audio: bool) -> None:
    """A model's ``image`` capability is advertised only on Ollama 0.14.3–0.32.5, and ``audio``
    only from 0.20.0 (which added /v1/audio/transcriptions)."""
    served = served_capabilities(("completion", "image", "audio", "vision"), version)
    assert ("image" in served) is image
    assert ("audio" in served) is audio
    assert "completion" in served and "vision" in served


# --- requests, field by field --------------------------------------------------------------------------

PNG = "iVBORw0KGgo="


def test_a_minimal_body_is_a_streamed_native_chat_with_num_ctx() -> None:
    """Messages pass as role + content, Ollama is always asked to stream, and num_ctx from
    discovery is the only option when the client sent none; no num_ctx known, no options."""
    assert translate.chat_request(chat(), "served:latest", num_ctx=8192) == {
        "model": "served:latest", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "options": {"num_ctx": 8192}}
    assert "options" not in translate.chat_request(chat(stream=False), "m", num_ctx=None)


def test_the_clients_num_ctx_wins_over_discovery() -> None:
    native = translate.chat_request(chat(options={"num_ctx": 2048}), "m", num_ctx=8192)
    assert native["options"] == {"num_ctx": 2048}


def test_content_parts_become_text_and_raw_base64_images() -> None:
    """Text parts join with newlines; each image data: URI loses its prefix (jpeg, png, webp, gif
    or bare); a null content is empty; roles are lower-cased."""
    body = chat(messages=[
        {"role": "System", "content": None},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "text", "text": "and this"},
            {"type": "image_url", "image_url": f"data:image/jpeg;base64,{PNG}"},
            {"type": "image_url", "image_url": {"url": f"data:;base64,{PNG}"}}]}])
    messages = translate.chat_request(body, "m", num_ctx=None)["messages"]
    assert messages == [{"role": "system", "content": ""},
                        {"role": "user", "content": "look\nand this", "images": [PNG] * 3}]


@pytest.mark.parametrize(("part", "says"), [
    ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, "image URLs"),
    ({"type": "image_url", "image_url": {"url": "cat.png"}}, "base64 data: URI"),
    ({"type": "image_url", "image_url": {}}, "image_url.url is required"),
    ({"type": "input_audio"}, "unsupported type 'input_audio'"),
])
def test_images_must_be_inline_data(part: dict[str, Any], says: str) -> None:
    """Ollama cannot fetch URLs: only inline base64 images are forwarded."""
    with pytest.raises(InvalidRequest, match=says):
        translate.chat_request(chat(messages=[{"role": "user", "content": [part]}]), "m",
                               num_ctx=None)


def test_tool_calls_and_tool_results_map_to_ollamas_fields() -> None:
    """An assistant's tool_calls carry parsed JSON arguments (string, object or empty) and their
    ids; a tool result carries tool_call_id and the tool's name (its own, else the call's);
    reasoning goes back as thinking."""
    body = chat(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "reasoning_content": "need a tool", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}},
            {"type": "function", "function": {"name": "noid", "arguments": {"a": 1}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "name": "clock", "content": "noon"},
        {"role": "tool", "content": "orphan"}])
    messages = translate.chat_request(body, "m", num_ctx=None)["messages"]
    assert messages[1] == {"role": "assistant", "content": "", "thinking": "need a tool",
                           "tool_calls": [
                               {"id": "call_1", "function": {"name": "weather",
                                                             "arguments": {"city": "Oslo"}}},
                               {"id": "call_2", "function": {"name": "time", "arguments": {}}},
                               {"function": {"name": "noid", "arguments": {"a": 1}}}]}
    assert messages[2:] == [
        {"role": "tool", "content": "sunny", "tool_name": "weather", "tool_call_id": "call_1"},
        {"role": "tool", "content": "noon", "tool_name": "clock", "tool_call_id": "call_2"},
        {"role": "tool", "content": "orphan"}]
    assert translate.chat_request(chat(messages=[{"role": "assistant", "content": "x",
                                                  "reasoning": "hm"}]), "m",
                                  num_ctx=None)["messages"][0]["thinking"] == "hm"


def test_tools_pass_through_unchanged() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert translate.chat_request(chat(tools=tools), "m", num_ctx=None)["tools"] == tools
    assert "tools" not in translate.chat_request(chat(tools=[]), "m", num_ctx=None)


def test_sampling_fields_become_options_of_the_same_name() -> None:
    """temperature, top_p, seed and both penalties become options; stop becomes a list;
    max_completion_tokens (else max_tokens) becomes num_predict."""
    native = translate.chat_request(chat(temperature=0.2, top_p=0.9, seed=7, frequency_penalty=0.5,
                                         presence_penalty=-0.5, stop=["a", "b"],
                                         max_completion_tokens=12, max_tokens=99),
                                    "m", num_ctx=None)
    assert native["options"] == {"num_predict": 12, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                                 "frequency_penalty": 0.5, "presence_penalty": -0.5,
                                 "stop": ["a", "b"]}
    assert translate.chat_request(chat(max_tokens=3), "m", num_ctx=None)["options"] == {
        "num_predict": 3}


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.5), ("temperature", -0.1), ("top_p", 1.5), ("frequency_penalty", 3),
    ("presence_penalty", -3), ("max_completion_tokens", 0), ("max_tokens", 2**31)])
def test_sampling_fields_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate.chat_request(chat(**{field: value}), "m", num_ctx=None)
    assert caught.value.param == field


@pytest.mark.parametrize(("response_format", "native_format"), [
    ({"type": "json_object"}, "json"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
     {"type": "object"}),
    ({"type": "text"}, None)])
def test_response_format_becomes_ollamas_format(response_format: dict[str, Any],
                                                native_format: Any) -> None:
    """JSON mode is ``format: json``; a JSON schema is passed as the format; text sets nothing."""
    native = translate.chat_request(chat(response_format=response_format), "m", num_ctx=None)
    assert native.get("format") == native_format


@pytest.mark.parametrize(("fields", "think"), [
    ({"reasoning_effort": "none"}, False), ({"reasoning_effort": "minimal"}, "low"),
    ({"reasoning_effort": "low"}, "low"), ({"reasoning_effort": "medium"}, "medium"),
    ({"reasoning_effort": "high"}, "high"), ({"reasoning_effort": "xhigh"}, "max"),
    ({"reasoning": {"effort": "high"}}, "high"), ({"think": True}, True), ({"think": "low"}, "low"),
    ({"reasoning_effort": "low", "think": True}, "low"), ({}, None), ({"think": 5}, None)])
def test_reasoning_effort_becomes_think(fields: dict[str, Any], think: Any) -> None:
    """reasoning_effort (or reasoning.effort) maps to think levels; a native think passes when
    no effort is given; an unknown effort is refused."""
    assert translate.chat_request(chat(**fields), "m", num_ctx=None).get("think") == think


def test_an_unknown_reasoning_effort_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="invalid reasoning_effort 'extreme'"):
        translate.chat_request(chat(reasoning_effort="extreme"), "m", num_ctx=None)


@pytest.mark.parametrize("keep_alive", ["5m", 0, 300, -1, 1.5])
def test_keep_alive_passes_as_a_duration_or_seconds(keep_alive: Any) -> None:
    assert translate.chat_request(chat(keep_alive=keep_alive), "m",
                                  num_ctx=None)["keep_alive"] == keep_alive


def test_keep_alive_must_not_be_a_boolean() -> None:
    with pytest.raises(InvalidRequest):
        translate.chat_request(chat(keep_alive=True), "m", num_ctx=None)


@pytest.mark.parametrize("messages", [None, [], "hi", [{"content": "no role"}], ["x"]])
def test_messages_must_be_a_non_empty_list_with_roles(messages: Any) -> None:
    with pytest.raises(InvalidRequest):
        translate.chat_request(chat(messages=messages), "m", num_ctx=None)


# --- responses ----------------------------------------------------------------------------------------


def line(content: str = "", **fields: Any) -> dict[str, Any]:
    """One native /api/chat NDJSON line."""
    message = {"role": "assistant", "content": content}
    message.update(fields.pop("message", {}))
    return {"model": "m", "message": message, "done": False} | fields


def done(reason: str = "stop", prompt: int = 3, completion: int = 5) -> dict[str, Any]:
    return line(done=True, done_reason=reason, prompt_eval_count=prompt, eval_count=completion)


def test_a_stream_sends_the_role_once_then_content_then_a_finish_chunk() -> None:
    """Chunks share one id, created and model; the role is only in the first delta; the finish
    chunk has an empty delta; no usage chunk unless asked."""
    tr = translate.ChatTranslator(model="llama3.2", stream=True)
    chunks = [*tr.feed(line("Hel")), *tr.feed(line("")), *tr.feed(line("lo")), *tr.feed(done())]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (tr.id, tr.created, "llama3.2", "chat.completion.chunk")}
    assert tr.id.startswith("chatcmpl-") and tr.usage.to_dict() == {
        "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_the_usage_chunk_comes_last_and_only_when_asked() -> None:
    tr = translate.ChatTranslator(model="m", stream=True, include_usage=True)
    *_, finish, usage = [*tr.feed(line("x")), *tr.feed(done(prompt=2, completion=1))]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


def test_thinking_streams_as_reasoning() -> None:
    tr = translate.ChatTranslator(model="m", stream=True)
    [first] = tr.feed(line(message={"thinking": "hmm"}))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "reasoning": "hmm"}


def test_tool_calls_get_ids_and_running_indexes() -> None:
    """Each native tool call becomes an OpenAI one with its id (or a fresh call_ id), the next
    index and JSON-string arguments; finish_reason is tool_calls."""
    tr = translate.ChatTranslator(model="m", stream=True)
    first = tr.feed(line(message={"tool_calls": [
        {"id": "call_a", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]}))
    second = tr.feed(line(message={"tool_calls": [{"function": {"name": "time"}}]}))
    finish = tr.feed(done())
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in (*first, *second)]
    assert calls[0] == {"index": 0, "id": "call_a", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
    assert calls[1]["index"] == 1 and calls[1]["id"].startswith("call_")
    assert calls[1]["function"] == {"name": "time", "arguments": "{}"}
    assert finish[0]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("reason", "finish"), [("stop", "stop"), ("length", "length"),
                                                ("load", "stop"), ("", "stop"), (None, "stop")])
def test_finish_reasons_map_to_openais(reason: str | None, finish: str) -> None:
    """stop and length are kept; anything else Ollama says ends as stop."""
    tr = translate.ChatTranslator(model="m", stream=True)
    [chunk] = tr.feed(line(done=True, done_reason=reason))
    assert chunk["choices"][0]["finish_reason"] == finish == tr.finish_reason


def test_length_stays_length_even_with_tool_calls() -> None:
    tr = translate.ChatTranslator(model="m", stream=False)
    tr.feed(line(message={"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}))
    tr.feed(done("length"))
    assert tr.completion()["choices"][0]["finish_reason"] == "length"


def test_a_non_streamed_answer_is_one_completion() -> None:
    """Not streaming, ``feed`` returns nothing and ``completion`` gathers content, reasoning,
    tool calls (without index, content null when there is none), finish reason and usage."""
    tr = translate.ChatTranslator(model="m", stream=False, include_usage=True)
    assert tr.feed(line("Hel", message={"thinking": "a"})) == []
    assert tr.feed(line("lo", message={"thinking": "b"})) == []
    assert tr.feed(done(prompt=4, completion=2)) == []
    completion = tr.completion()
    assert completion == {
        "id": tr.id, "object": "chat.completion", "created": tr.created, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hello", "reasoning": "ab"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}

    tools = translate.ChatTranslator(model="m", stream=False)
    tools.feed(line(message={"tool_calls": [{"id": "c1", "function": {"name": "f",
                                                                     "arguments": "{}"}}]}))
    tools.feed(done())
    [choice] = tools.completion()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_a_completion_without_a_done_line_still_has_a_finish_reason() -> None:
    tr = translate.ChatTranslator(model="m", stream=False)
    tr.feed(line("partial"))
    assert tr.completion()["choices"][0]["finish_reason"] == "stop"


# --- embeddings and images ------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "inputs"), [("one", ["one"]), (["a", "b"], ["a", "b"]),
                                               ("", [""])])
def test_embed_input_is_always_a_list(given: Any, inputs: list[str]) -> None:
    assert translate.embed_request({"input": given}, "e") == {"model": "e", "input": inputs}


@pytest.mark.parametrize("given", [[], None, 5, [1, 2], ["a", 3], [["a"]]])
def test_embed_input_must_be_text(given: Any) -> None:
    with pytest.raises(InvalidRequest, match="input must be a string"):
        translate.embed_request({"input": given}, "e")


def test_embed_dimensions_and_encoding_format() -> None:
    """dimensions is forwarded; encoding_format is float or base64, nothing else."""
    assert translate.embed_request({"input": "x", "dimensions": 8}, "e")["dimensions"] == 8
    for bad in (0, -1, True):
        with pytest.raises(InvalidRequest):
            translate.embed_request({"input": "x", "dimensions": bad}, "e")
    translate.embed_request({"input": "x", "encoding_format": "base64"}, "e")
    with pytest.raises(InvalidRequest, match="encoding_format"):
        translate.embed_request({"input": "x", "encoding_format": "int8"}, "e")


def test_embed_response_lists_vectors_with_prompt_usage() -> None:
    """One ``embedding`` object per input in order, the model, and usage counting the prompt
    only (total = prompt)."""
    native = {"embeddings": [[0.5, -1.0], [0.25, 2.0]], "prompt_eval_count": 6}
    body, usage = translate.embed_response(native, {"input": ["a", "b"]}, "e")
    assert body == {"object": "list", "model": "e", "usage": {"prompt_tokens": 6, "total_tokens": 6},
                    "data": [{"object": "embedding", "embedding": [0.5, -1.0], "index": 0},
                             {"object": "embedding", "embedding": [0.25, 2.0], "index": 1}]}
    assert (usage.prompt_tokens, usage.completion_tokens) == (6, 0)


def test_embed_response_in_base64_is_little_endian_float32() -> None:
    """``encoding_format: base64`` packs each vector as little-endian float32, as OpenAI does."""
    body, _ = translate.embed_response({"embeddings": [[0.5, -1.0, 3.0]]},
                                       {"input": "a", "encoding_format": "base64"}, "e")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.0, 3.0)


def test_image_request_maps_prompt_size_and_seed() -> None:
    """The prompt, width/height from size (none for auto), and seed as an option; not streamed."""
    assert translate.image_request({"prompt": "a cat", "size": "512x256", "seed": 4}, "img") == {
        "model": "img", "prompt": "a cat", "stream": False, "width": 512, "height": 256,
        "options": {"seed": 4}}
    assert translate.image_request({"prompt": "a cat", "size": "auto"}, "img") == {
        "model": "img", "prompt": "a cat", "stream": False}
    for bad in ({"prompt": ""}, {}, {"prompt": "x", "size": "big"}):
        with pytest.raises(InvalidRequest):
            translate.image_request(bad, "img")


def test_image_response_lists_each_b64_json_image() -> None:
    """One b64_json entry per image Ollama made, in order."""
    response = translate.image_response([{"image": PNG}])
    assert response["data"] == [{"b64_json": PNG}] and isinstance(response["created"], int)
    assert len(translate.image_response([{"image": PNG}] * 3)["data"]) == 3


def test_n_images_are_n_generations_with_distinct_seeds() -> None:
    """n images are n native calls; with a seed, image i uses seed + i (reproducible, and not n
    copies of one image); url answers are refused, never silently b64_json."""
    natives = translate.image_requests({"prompt": "a cat", "n": 3, "seed": 10}, "img")
    assert [n["options"]["seed"] for n in natives] == [10, 11, 12]
    assert len(translate.image_requests({"prompt": "a cat"}, "img")) == 1
    with pytest.raises(InvalidRequest):
        translate.image_requests({"prompt": "a cat", "n": 11}, "img")
    with pytest.raises(InvalidRequest):
        translate.image_requests({"prompt": "a cat", "response_format": "url"}, "img")


def test_logprobs_are_asked_for_and_returned_in_openai_shape() -> None:
    """logprobs/top_logprobs reach Ollama's native fields; each line's log probabilities come
    back on that line's chunk as choices[0].logprobs.content (bytes null when unknown, top
    alternatives always a list), and all together in the whole answer; not asked, none sent."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True,
            "top_logprobs": 2}
    native = translate.chat_request(body, "m", num_ctx=None)
    assert native["logprobs"] is True and native["top_logprobs"] == 2
    assert "logprobs" not in translate.chat_request({**body, "logprobs": False}, "m", num_ctx=None)
    line = {"message": {"role": "assistant", "content": "Hi"}, "done": False,
            "logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                          "top_logprobs": [{"token": "Hello", "logprob": -1.5}]}]}
    done = {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
            "prompt_eval_count": 3, "eval_count": 1}
    stream = translate.ChatTranslator(model="m", stream=True, logprobs=True)
    [chunk] = stream.feed(line)
    assert chunk["choices"][0]["logprobs"] == {"content": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hello", "logprob": -1.5, "bytes": None}]}]}
    whole = translate.ChatTranslator(model="m", stream=False, logprobs=True)
    whole.feed(line)
    whole.feed(done)
    assert whole.completion()["choices"][0]["logprobs"]["content"][0]["token"] == "Hi"
    plain = translate.ChatTranslator(model="m", stream=False)
    plain.feed(line)
    plain.feed(done)
    assert "logprobs" not in plain.completion()["choices"][0]
    with pytest.raises(InvalidRequest):
        translate.chat_request({**body, "logprobs": "yes"}, "m", num_ctx=None)


def test_tool_choice_and_the_developer_role() -> None:
    """tool_choice "none" offers no tools, a named function offers only that one, "auto" all;
    "required" (which Ollama cannot force) and an unknown name are refused; the developer role is
    the system role to Ollama."""
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("a", "b")]
    body = {"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                       {"role": "user", "content": "hi"}], "tools": tools}
    native = translate.chat_request(body, "m", num_ctx=None)
    assert native["messages"][0]["role"] == "system" and len(native["tools"]) == 2
    assert "tools" not in translate.chat_request({**body, "tool_choice": "none"}, "m", num_ctx=None)
    named = {"type": "function", "function": {"name": "b"}}
    assert translate.chat_request({**body, "tool_choice": named}, "m",
                                  num_ctx=None)["tools"] == [tools[1]]
    for bad in ("required", {"type": "function", "function": {"name": "zzz"}}):
        with pytest.raises(InvalidRequest) as refused:
            translate.chat_request({**body, "tool_choice": bad}, "m", num_ctx=None)
        assert refused.value.param == "tool_choice"
