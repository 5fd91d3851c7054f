"""The Responses dialect's translation, both ways, field by field, with no server: request →
internal chat body, chat answer → Response, chat chunks → the Responses event stream, and the
dialect's storing rule."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from pendra.errors import InvalidRequest, WorkerFailed
from pendra.server.api.responses import tools, translate
from pendra.server.api.responses.dialect import ResponsesDialect
from pendra.server.api.responses.events import ResponseEvents, Turn
from pendra.server.api.responses.schema import ResponseCreate

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
           "strict": True}


def request(**fields: Any) -> ResponseCreate:
    return ResponseCreate.model_validate({"model": "m", "input": "hi", **fields})


def body(**fields: Any) -> dict[str, Any]:
    req = request(**fields)
    return translate.chat_body(req, [], translate.input_items(req.input),
                               tools.tool_map(req.tools))


def refused(param: str, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        body(**fields)
    assert caught.value.param == param, caught.value.message
    return caught.value


# --- request → chat ------------------------------------------------------------------------------


def test_a_string_input_with_instructions() -> None:
    assert body(instructions="Be brief.") == {
        "model": "m", "stream": False,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_every_mapped_field() -> None:
    chat = body(stream=True, temperature=0.3, top_p=0.5, max_output_tokens=7,
                parallel_tool_calls=False, user="u", keep_alive="5m", tools=[WEATHER],
                tool_choice={"type": "function", "name": "get_weather"},
                reasoning={"effort": "low", "summary": "auto"},
                include=["message.output_text.logprobs", "reasoning.encrypted_content"],
                top_logprobs=3, options={"num_ctx": 2048, "top_k": 4},
                metadata={"a": "b"}, store=False, prompt_cache_key="p",
                safety_identifier="s", text={"verbosity": "low"})
    assert {k: v for k, v in chat.items() if k != "messages"} == {
        "model": "m", "stream": True, "temperature": 0.3, "top_p": 0.5,
        "max_completion_tokens": 7, "parallel_tool_calls": False, "user": "u",
        "keep_alive": "5m",
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather", "parameters": WEATHER["parameters"],
            "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "reasoning_effort": "low", "logprobs": True, "top_logprobs": 3,
        "options": {"num_ctx": 2048, "top_k": 4}}


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, {"type": "text"}),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True,
      "description": "d"},
     {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"},
                                             "description": "d", "strict": True}}),
])
def test_text_format_becomes_response_format(fmt: dict[str, Any],
                                             expected: dict[str, Any]) -> None:
    assert body(text={"format": fmt})["response_format"] == expected


def test_items_become_chat_messages() -> None:
    image = "data:image/png;base64,AAAA"
    chat = body(input=[
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": image, "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
         "encrypted_content": None},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": ""},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "two"}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text",
                                                         "text": "again"}]},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ])
    assert chat["messages"] == [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url",
                                      "image_url": {"url": image, "detail": "low"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}],
         "reasoning": "hm",
         "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
             {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": None, "reasoning": "again", "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ]


def test_history_comes_first_and_errors_name_the_input_index() -> None:
    req = request(input=[{"role": "user", "content": "next"}])
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                "text": "first"}]},
               translate.message_item("msg_1", "answer", "completed")]
    chat = translate.chat_body(req, history, translate.input_items(req.input), tools.ToolMap())
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        ("user", [{"type": "text", "text": "first"}]),
        ("assistant", [{"type": "text", "text": "answer"}]),
        ("user", "next")]
    bad = request(input=[{"role": "user", "content": "ok"}, {"type": "bogus"}])
    with pytest.raises(InvalidRequest) as caught:
        translate.chat_body(bad, history, translate.input_items(bad.input), tools.ToolMap())
    assert caught.value.param == "input[1].type"


def test_custom_namespace_and_hosted_tools() -> None:
    """A custom tool is a function of one string with its grammar in the description; namespace
    members are offered as namespace__name; hosted tools are not offered; allowed_tools narrows
    what is offered."""
    patch = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    crm = {"type": "namespace", "name": "crm", "description": "CRM",
           "tools": [{"type": "function", "name": "find", "parameters": {"type": "object"}}]}
    chat = body(tools=[{"type": "web_search", "external_web_access": False}, patch, crm,
                       {"type": "image_generation"}])
    assert chat["tools"] == [
        {"type": "function", "function": {
            "name": "apply_patch",
            "description": "Edit files.\n\nThe input must follow this lark grammar:\nstart: /.+/",
            "parameters": {"type": "object", "required": ["input"], "properties": {"input": {
                "type": "string", "description": "The tool's raw text input"}}}}},
        {"type": "function", "function": {"name": "crm__find",
                                          "parameters": {"type": "object"}}}]
    narrowed = body(tools=[patch, crm], tool_choice={
        "type": "allowed_tools", "mode": "auto",
        "tools": [{"type": "function", "name": "find", "namespace": "crm"}]})
    assert narrowed["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in narrowed["tools"]] == ["crm__find"]
    named = body(tools=[patch], tool_choice={"type": "custom", "name": "apply_patch"})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    assert "tools" not in body(tools=[{"type": "web_search"}])
    offered = tools.tool_map([patch, crm])
    custom = tools.output_item("fc_1", {"id": "call_1", "function": {
        "name": "apply_patch", "arguments": json.dumps({"input": "*** Begin Patch"})}}, offered)
    assert custom == {"id": "ctc_1", "type": "custom_tool_call", "status": "completed",
                      "call_id": "call_1", "name": "apply_patch", "input": "*** Begin Patch"}
    spaced = tools.output_item("fc_2", {"id": "call_2", "function": {
        "name": "crm__find", "arguments": "{}"}}, offered)
    assert spaced == {"id": "fc_2", "type": "function_call", "status": "completed",
                      "call_id": "call_2", "name": "find", "arguments": "{}",
                      "namespace": "crm"}
    history = body(input=[
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "P"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
        {"type": "function_call", "call_id": "c2", "name": "find", "namespace": "crm",
         "arguments": "{}"}])["messages"]
    assert history == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "apply_patch", "arguments": "{\"input\": \"P\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "crm__find",
                                                          "arguments": "{}"}}]}]


def test_refusals_name_the_field() -> None:
    refused("input[0].type", input=[{"type": "item_reference", "id": "x"}])
    refused("input[0].call_id", input=[{"type": "function_call_output", "output": "x"}])
    refused("input[0].output", input=[{"type": "function_call_output", "call_id": "c",
                                       "output": 3}])
    refused("input[0].arguments", input=[{"type": "function_call", "call_id": "c",
                                          "name": "f", "arguments": "{"}])
    refused("input[0].name", input=[{"type": "function_call", "call_id": "c", "name": "",
                                     "arguments": "{}"}])
    refused("input[0].role", input=[{"role": "tool", "content": "x"}])
    refused("input[0].content", input=[{"role": "user", "content": 5}])
    refused("input[0].content[0].type", input=[{"role": "user", "content": [
        {"type": "input_audio"}]}])
    refused("input[0].content[0].file_id", input=[{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}]}])
    refused("input[0].content[0].image_url", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/y.png"}]}])
    refused("input[0].content[0].text", input=[{"role": "user", "content": [
        {"type": "input_text", "text": 1}]}])
    refused("input[0].summary", input=[{"type": "reasoning", "summary": "x"}])
    refused("tools[0].type", tools=[{"type": "local_shell"}])
    refused("tools[0].tools[0].type", tools=[{"type": "namespace", "name": "n", "tools": [
        {"type": "web_search"}]}])
    refused("tools[1].name", tools=[WEATHER, WEATHER])
    refused("tool_choice.type", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"})
    refused("tool_choice.mode", tools=[WEATHER], tool_choice={
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                               "name": "get_weather"}]})
    refused("tools[0].name", tools=[{"type": "function", "name": "a b"}])
    refused("tools[0].parameters", tools=[{"type": "function", "name": "f", "parameters": 1}])
    refused("tool_choice.type", tools=[WEATHER], tool_choice={"type": "computer"})
    refused("tool_choice", tools=[WEATHER], tool_choice="required")
    refused("tool_choice", tools=[WEATHER], tool_choice={"type": "function", "name": "nope"})
    refused("input", input=[], instructions="only a system message")


@pytest.mark.parametrize(("fields", "where"), [
    ({"temperature": 2.5}, ("temperature",)),
    ({"top_p": -1}, ("top_p",)),
    ({"max_output_tokens": 0}, ("max_output_tokens",)),
    ({"reasoning": {"effort": "huge"}}, ("reasoning", "effort")),
    ({"text": {"format": {"type": "yaml"}}}, ("text", "format", "type")),
    ({"include": ["nope"]}, ("include", 0)),
    ({"store": "maybe"}, ("store",)),
    ({"previous_response_id": "x" * 41}, ("previous_response_id",)),
])
def test_typed_fields_are_checked(fields: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        request(**fields)
    assert any(tuple(e["loc"][:len(where)]) == where for e in caught.value.errors())


def test_unsupported_features_are_refused() -> None:
    for name, value in (("background", True), ("conversation", "conv_1"),
                        ("prompt", {"id": "p"})):
        with pytest.raises(InvalidRequest) as caught:
            request(**{name: value})
        assert caught.value.param == name
    request(background=False)  # saying no is fine
    with pytest.raises(InvalidRequest) as caught:
        ResponseCreate.model_validate({"model": "m"})
    assert caught.value.param == "input"
    ResponseCreate.model_validate({"model": "m", "previous_response_id": "resp_1"})


def test_echo_fills_openai_defaults() -> None:
    echo = request(tools=[{"type": "function", "name": "f"}]).echo()
    assert echo == {
        "instructions": None, "metadata": {}, "parallel_tool_calls": True,
        "temperature": None, "top_p": None, "tool_choice": "auto",
        "tools": [{"type": "function", "name": "f", "description": None, "parameters": None,
                   "strict": True}],
        "max_output_tokens": None, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "text": {"format": {"type": "text"}},
        "store": True, "truncation": "disabled", "user": None, "safety_identifier": None,
        "prompt_cache_key": None, "top_logprobs": None, "service_tier": "default",
        "background": False}
    echo = request(tool_choice={"type": "function", "name": "f"}, tools=[WEATHER],
                   reasoning={"effort": "high", "generate_summary": "concise"},
                   text={"format": {"type": "json_object"}, "verbosity": "high"}).echo()
    assert echo["tool_choice"] == {"type": "function", "name": "f"}
    assert echo["reasoning"] == {"effort": "high", "summary": "concise"}
    assert echo["text"] == {"format": {"type": "json_object"}, "verbosity": "high"}


def test_ids_are_given_to_items_without_one() -> None:
    items = translate.with_ids([{"role": "user", "content": "x"},
                                {"type": "function_call", "id": "fc_mine", "call_id": "c"}])
    assert items[0]["type"] == "message" and items[0]["id"].startswith("msg_")
    assert items[1]["id"] == "fc_mine"


# --- chat answer → Response ----------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop",
               logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "served:1b",
            "choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 4,
                                           "total_tokens": 13}}


def dialect(store: Any = None) -> ResponsesDialect:
    turn = Turn("resp_1", 100, request(metadata={"k": "v"}).echo(), "m")
    return ResponsesDialect(turn, conversation=[{"id": "msg_0"}], store=store, key_id="key_1",
                            retention_s=60)


def test_a_whole_answer_becomes_a_response() -> None:
    answer = dialect().whole(completion({
        "role": "assistant", "content": "Sunny.", "reasoning": "Think.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"x\"}"}}]},
        finish="tool_calls"))
    assert answer["id"] == "resp_1" and answer["object"] == "response"
    assert answer["created_at"] == 100 and answer["model"] == "served:1b"
    assert answer["status"] == "completed" and answer["incomplete_details"] is None
    assert answer["error"] is None and answer["metadata"] == {"k": "v"}
    reasoning, message, call = answer["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Think."}]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["status"] == "completed" and message["id"].startswith("msg_")
    assert message["content"] == [{"type": "output_text", "text": "Sunny.", "annotations": [],
                                   "logprobs": []}]
    assert {k: call[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_1", "name": "get_weather",
        "arguments": "{\"city\":\"x\"}", "status": "completed"}
    assert answer["usage"] == {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens": 4,
                               "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": 13}


def test_a_call_alone_has_no_message_and_length_is_incomplete() -> None:
    only_call = dialect().whole(completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}))
    assert [i["type"] for i in only_call["output"]] == ["function_call"]
    cut = dialect().whole(completion({"role": "assistant", "content": "a b"}, finish="length",
                                     logprobs=[{"token": "a", "logprob": -0.5, "bytes": None,
                                                "top_logprobs": [{"token": "b",
                                                                  "logprob": -2.0}]}]))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete"
    assert cut["output"][0]["content"][0]["logprobs"] == [
        {"token": "a", "logprob": -0.5, "bytes": [97],
         "top_logprobs": [{"token": "b", "logprob": -2.0, "bytes": [98]}]}]
    empty = dialect().whole(completion({"role": "assistant", "content": ""}))
    assert [i["type"] for i in empty["output"]] == ["message"]


# --- chat chunks → events ------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served:1b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}]}


def parse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def test_a_stream_of_thinking_text_and_a_call() -> None:
    writer = ResponseEvents(Turn("resp_1", 100, request().echo(), "m"))
    raw = b"".join([
        writer.chunk(chunk({"role": "assistant", "content": "", "reasoning": "Hm"})),
        writer.chunk(chunk({"content": "", "reasoning": "m."})),
        writer.chunk(chunk({"content": "It"})),
        writer.chunk(chunk({"content": " is."})),
        writer.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                            "function": {"name": "f", "arguments": "{}"}}]})),
        writer.chunk(chunk({}, "tool_calls")),
        writer.end({"prompt_tokens": 5, "completion_tokens": 6}, "tool_calls")])
    events = parse(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == [] and events[0]["response"]["model"] == "m"
    assert events[6]["text"] == "Hmm." and events[13]["text"] == "It is."
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [
        0, 1, 2]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["model"] == "served:1b"
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "It is."
    assert final["output"][2]["call_id"] == "call_1"
    assert final["usage"]["total_tokens"] == 11
    assert writer.final == final


def test_a_stream_cut_by_length_and_one_with_nothing_said() -> None:
    writer = ResponseEvents(Turn("resp_1", 100, request().echo(), "m"))
    events = parse(writer.chunk(chunk({"content": "a"})) + writer.end({}, "length"))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    silent = ResponseEvents(Turn("resp_2", 100, request().echo(), "m"))
    events = parse(silent.end({"prompt_tokens": 1}, "stop"))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]


def test_a_failed_stream_ends_with_error_and_response_failed() -> None:
    writer = ResponseEvents(Turn("resp_1", 100, request().echo(), "m"))
    events = parse(writer.chunk(chunk({"content": "a"}))
                   + writer.fail(WorkerFailed("the runner died", worker_id="w")))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "server_error" and events[-2]["message"] == "the runner died"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "the runner died"}
    assert writer.final is None


# --- storing -------------------------------------------------------------------------------------


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    async def change(self, work: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise OSError("disk full")
        return None


async def test_settle_stores_only_when_asked_and_survives_a_store_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    await dialect(store=None).settle({"id": "resp_1"})  # store false: nothing to do
    keeping = FakeStore()
    streamed = dialect(store=keeping)
    await streamed.settle(None)  # no stream written: nothing to keep
    assert keeping.calls == 0
    writer = streamed.events()
    writer.end({}, "stop")
    await streamed.settle(None)
    assert keeping.calls == 1
    broken = FakeStore(fail=True)
    with caplog.at_level(logging.WARNING):
        await dialect(store=broken).settle({"id": "resp_1"})
    assert broken.calls == 1 and "could not be stored" in caplog.text


def test_a_streamed_custom_tool_call() -> None:
    patch = {"type": "custom", "name": "apply_patch"}
    writer = ResponseEvents(Turn("resp_1", 100, request().echo(), "m", tools.tool_map([patch])))
    events = parse(writer.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1",
                                                       "type": "function", "function": {
        "name": "apply_patch", "arguments": "{\"input\": \"P\"}"}}]}))
                   + writer.end({}, "tool_calls"))
    assert [e["type"] for e in events[2:-1]] == [
        "response.output_item.added", "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done", "response.output_item.done"]
    assert events[2]["item"]["input"] == "" and events[3]["delta"] == "P"
    assert events[4]["input"] == "P"
    assert events[-1]["response"]["output"] == [{
        "id": events[2]["item"]["id"], "type": "custom_tool_call", "status": "completed",
        "call_id": "call_1", "name": "apply_patch", "input": "P"}]
