"""The OpenAI Responses API end to end: the official ``openai`` SDK against ``pendra server``, two
``pendra worker`` processes and their emulated Ollamas.

What reached "Ollama" is read back from the emulators' records, field by field: the Responses
request must arrive as the one internal chat Pendra serves (num_ctx injected, options mapped).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from polling import eventually
from suite_env import WAIT
from cluster import Cluster, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

_clients: list[AsyncOpenAI] = []
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
# A 1×1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    for api in _clients:
        await api.close()


def client(cluster: Cluster, *, key: str | None = None, v1_root: bool = False) -> AsyncOpenAI:
    base = cluster.base_url + ("/v1" if v1_root else "/api/v1")
    api = AsyncOpenAI(base_url=base, api_key=key or cluster.api_key, max_retries=0,
                      timeout=30 * WAIT)
    _clients.append(api)
    return api


async def last_chat(cluster: Cluster) -> dict[str, Any]:
    """The one /api/chat body that reached an emulator since the last clear."""
    found = await cluster.recorded("/api/chat")
    assert len(found) == 1, found
    body: dict[str, Any] = found[0]["body"]
    return body


def usage_kinds(cluster: Cluster) -> list[str]:
    with sqlite3.connect(cluster.root / "server" / "pendra.db") as db:
        return [row[0] for row in db.execute("SELECT kind FROM usage ORDER BY id")]


async def test_non_streaming_answer_and_what_reached_ollama(cluster: Cluster) -> None:
    """A plain request comes back as a completed Response with a message, usage and the request's
    fields echoed; Ollama got instructions as system, the sampling fields as options, num_ctx
    injected; the usage row is of kind responses."""
    api = client(cluster)
    await cluster.clear_requests()
    raw = await api.responses.with_raw_response.create(
        model="llama3.2:latest", input="hello there", instructions="Be brief.",
        temperature=0.5, top_p=0.9, max_output_tokens=50, metadata={"run": "1"}, store=False,
        user="u-1")
    reply = raw.parse()
    assert raw.headers["x-request-id"] and raw.headers["x-worker-id"] in cluster.worker_ids
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.status == "completed" and reply.error is None
    assert reply.output_text == "Echo: hello there"
    message = reply.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert reply.usage is not None and reply.usage.input_tokens > 0
    assert reply.usage.output_tokens == 3
    assert reply.usage.total_tokens == reply.usage.input_tokens + 3
    assert (reply.instructions, reply.temperature, reply.top_p) == ("Be brief.", 0.5, 0.9)
    assert reply.max_output_tokens == 50 and reply.metadata == {"run": "1"}
    assert reply.model == "llama3.2:latest" and reply.tool_choice == "auto"
    assert reply.text is not None and reply.text.format.type == "text"
    body = await last_chat(cluster)
    assert body["model"] == "llama3.2:latest" and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there"}]
    assert body["options"] == {"temperature": 0.5, "top_p": 0.9, "num_predict": 50,
                               "num_ctx": 131072}
    assert "tools" not in body and "format" not in body and "think" not in body

    async def metered() -> bool:
        return "responses" in usage_kinds(cluster)

    await eventually(metered, interval_s=0.1)


async def test_streaming_event_sequence(cluster: Cluster) -> None:
    """stream=True gives OpenAI's event sequence, numbered from 0, ending in response.completed
    whose Response carries the text and the usage; the SDK's stream helper assembles it."""
    api = client(cluster)
    stream = await api.responses.create(model="llama3.2:latest", stream=True, store=False,
                                        input="count [[tokens=6]]")
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert kinds.count("response.output_text.delta") == 6
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text
    assert done.usage is not None and done.usage.output_tokens == 6
    assert events[0].response.status == "in_progress" and events[0].response.id == done.id
    async with api.responses.stream(model="llama3.2:latest", input="count [[tokens=4]]",
                                    store=False) as helper:
        async for _ in helper:
            pass
        final = await helper.get_final_response()
    assert final.status == "completed" and len(final.output_text.split()) == 4


async def test_function_call_round_trip(cluster: Cluster) -> None:
    """A function tool is offered, the model calls it (a function_call item with call_id and JSON
    arguments), the client sends function_call_output, and the model answers; Ollama saw the
    assistant's tool call and the tool result in chat's shape."""
    api = client(cluster)
    await cluster.clear_requests()
    first = await api.responses.create(model="llama3.2:latest", input="weather in Tokyo?",
                                       tools=[WEATHER], store=False)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id and json.loads(call.arguments) == {"city": "test"}
    assert first.status == "completed" and first.output_text == ""
    sent = await last_chat(cluster)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER["parameters"]}}]
    await cluster.clear_requests()
    second = await api.responses.create(model="llama3.2:latest", tools=[WEATHER], store=False,
                                        input=[
        {"role": "user", "content": "weather in Tokyo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "11 degrees"}])
    assert second.status == "completed" and second.output_text.startswith("Echo:")
    messages = (await last_chat(cluster))["messages"]
    assert messages == [
        {"role": "user", "content": "weather in Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call.call_id,
             "function": {"name": "get_weather", "arguments": {"city": "test"}}}]},
        {"role": "tool", "content": "11 degrees", "tool_name": "get_weather",
         "tool_call_id": call.call_id}]


async def test_streamed_function_call_events(cluster: Cluster) -> None:
    api = client(cluster)
    stream = await api.responses.create(model="llama3.2:latest", input="weather in Oslo?",
                                        tools=[WEATHER], stream=True, store=False)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "test"}
    item = next(e.item for e in events if e.type == "response.output_item.done"
                and e.item.type == "function_call")
    assert item.name == "get_weather" and item.arguments == done.arguments
    assert events[-1].type == "response.completed"
    assert events[-1].response.output[-1].call_id == item.call_id


async def test_json_output_via_text_format(cluster: Cluster) -> None:
    """text.format json_schema reaches Ollama as its format (the schema), json_object as "json";
    the answer parses."""
    api = client(cluster)
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    await cluster.clear_requests()
    reply = await api.responses.create(
        model="llama3.2:latest", input="a person", store=False,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                         "strict": True}})
    assert json.loads(reply.output_text) == {"name": "test", "age": 1}
    assert (await last_chat(cluster))["format"] == schema
    assert reply.text is not None and reply.text.format.type == "json_schema"
    await cluster.clear_requests()
    reply = await api.responses.create(model="llama3.2:latest", input="anything", store=False,
                                       text={"format": {"type": "json_object"}})
    assert json.loads(reply.output_text) == {"echo": "anything"}
    assert (await last_chat(cluster))["format"] == "json"


async def test_images_in(cluster: Cluster) -> None:
    """An input_image (a base64 data: URI) reaches Ollama as the message's image."""
    api = client(cluster)
    await cluster.clear_requests()
    reply = await api.responses.create(model="llava:7b", store=False, input=[{
        "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert "[images=1]" in reply.output_text
    message = (await last_chat(cluster))["messages"][0]
    assert message == {"role": "user", "content": "what is this?", "images": [PNG]}


async def test_reasoning_effort_and_reasoning_items(cluster: Cluster) -> None:
    """reasoning.effort reaches Ollama as think; the thinking comes back as a reasoning item with
    summary text, whole and streamed (reasoning summary events); effort none turns it off; a
    reasoning item in the input goes back to Ollama as the assistant's thinking."""
    api = client(cluster)
    await cluster.clear_requests()
    reply = await api.responses.create(model="qwen3:8b", input="why?", store=False,
                                       reasoning={"effort": "high", "summary": "auto"})
    assert (await last_chat(cluster))["think"] == "high"
    thought = reply.output[0]
    assert thought.type == "reasoning" and thought.summary[0].type == "summary_text"
    assert thought.summary[0].text.startswith("Let me think")
    assert reply.output[1].type == "message" and reply.output_text.startswith("Echo:")
    assert reply.reasoning is not None and reply.reasoning.effort == "high"
    stream = await api.responses.create(model="qwen3:8b", input="why?", store=False,
                                        stream=True, reasoning={"effort": "low"})
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert deltas == thought.summary[0].text
    assert "response.reasoning_summary_text.done" in kinds
    assert [i.type for i in events[-1].response.output] == ["reasoning", "message"]
    await cluster.clear_requests()
    off = await api.responses.create(model="qwen3:8b", input="why?", store=False,
                                     reasoning={"effort": "none"})
    assert [i.type for i in off.output] == ["message"]
    assert (await last_chat(cluster))["think"] is False
    await cluster.clear_requests()
    await api.responses.create(model="qwen3:8b", store=False, input=[
        {"role": "user", "content": "why?"},
        {"type": "reasoning", "id": thought.id, "summary": [{"type": "summary_text",
                                                              "text": "I thought."}],
         "encrypted_content": None},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Because."}]},
        {"role": "user", "content": "and then?"}])
    assert (await last_chat(cluster))["messages"][1] == {
        "role": "assistant", "content": "Because.", "thinking": "I thought."}


async def test_max_output_tokens_reached_is_incomplete(cluster: Cluster) -> None:
    api = client(cluster)
    reply = await api.responses.create(model="llama3.2:latest", input="count [[tokens=30]]",
                                       max_output_tokens=5, store=False)
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert len(reply.output_text.split()) == 5 and reply.output[0].status == "incomplete"
    stream = await api.responses.create(model="llama3.2:latest", input="count [[tokens=30]]",
                                        max_output_tokens=5, store=False, stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


async def test_previous_response_id_continues_the_conversation(cluster: Cluster) -> None:
    """A stored response is retrievable; continuing from it sends Ollama the whole conversation
    (its input, its answer, then the new input), streamed or not; its input items are listed;
    delete makes it 404 everywhere."""
    api = client(cluster)
    first = await api.responses.create(model="llama3.2:latest", input="my name is Ada",
                                       instructions="Be kind.")
    assert first.store is True
    got = await api.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text
    await cluster.clear_requests()
    second = await api.responses.create(model="llama3.2:latest", input="what is my name?",
                                        previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert (await last_chat(cluster))["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "what is my name?"}]  # instructions are not carried over
    await cluster.clear_requests()
    stream = await api.responses.create(model="llama3.2:latest", input="and again?",
                                        previous_response_id=second.id, stream=True)
    events = [e async for e in stream]
    third_id = events[-1].response.id
    messages = (await last_chat(cluster))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == "and again?"
    third = await api.responses.retrieve(third_id)  # a streamed answer is stored too
    assert third.output_text == events[-1].response.output_text
    items = await api.responses.input_items.list(third_id, order="asc")
    assert [i.type for i in items.data] == ["message"] * 5
    assert items.data[0].content[0].text == "my name is Ada"
    await api.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.delete(first.id)
    # The later responses carry the whole conversation: deleting the first loses nothing.
    await api.responses.create(model="llama3.2:latest", input="still there?",
                               previous_response_id=second.id, store=False)


async def test_store_false_keeps_nothing(cluster: Cluster) -> None:
    api = client(cluster)
    reply = await api.responses.create(model="llama3.2:latest", input="forget me", store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await api.responses.create(model="llama3.2:latest", input="go on",
                                   previous_response_id=reply.id)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "previous_response_id"
    assert error["code"] == "previous_response_not_found"
    with sqlite3.connect(cluster.root / "server" / "pendra.db") as db:
        assert not db.execute("SELECT 1 FROM stored_responses WHERE id = ?",
                              (reply.id,)).fetchall()


async def test_another_key_cannot_read_a_stored_response(cluster: Cluster) -> None:
    mine = client(cluster)
    theirs = client(cluster, key=cluster.create_key("someone else"))
    reply = await mine.responses.create(model="llama3.2:latest", input="secret")
    for attempt in (theirs.responses.retrieve(reply.id), theirs.responses.delete(reply.id),
                    theirs.responses.input_items.list(reply.id),
                    theirs.responses.create(model="llama3.2:latest", input="x",
                                            previous_response_id=reply.id)):
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert (await mine.responses.retrieve(reply.id)).output_text == reply.output_text


async def test_errors_of_each_class(cluster: Cluster) -> None:
    """Bad fields are 400 naming them (typed fields, items, tools); a bad key 401; an unknown
    model 404; all in OpenAI's error shape with the request id."""
    api = client(cluster)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"temperature": 3}, "temperature"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
         "input[0].arguments"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"tools": [{"type": "local_shell"}]}, "tools[0].type"),
        ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}},
         "tool_choice.type"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"reasoning": {"effort": "enormous"}}, "reasoning.effort"),
        ({"background": True}, "background"),
        ({"include": ["everything"]}, "include[0]"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"input": [{"role": "user", "content": "x"}, "loose text"]}, "input[1]"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"previous_response_id": "resp_" + "x" * 40}, "previous_response_id"),
    ]
    for extra, param in bad:
        body = {"model": "llama3.2:latest", "input": "hi", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            await api.responses.create(**body)  # type: ignore[call-overload]
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param, (extra, error)
        assert error["type"] == "invalid_request_error"
        assert caught.value.response.headers["x-request-id"]
    with pytest.raises(openai.BadRequestError):
        await api.responses.create(model="llama3.2:latest")  # type: ignore[call-overload]
    with pytest.raises(openai.AuthenticationError):
        await client(cluster, key="pdr_sk_" + "x" * 43).responses.create(
            model="llama3.2:latest", input="hi")
    with pytest.raises(openai.NotFoundError) as missing:
        await api.responses.create(model="no-such-model:1b", input="hi")
    assert missing.value.response.headers["x-request-id"]


async def test_failure_mid_stream_is_response_failed(cluster: Cluster) -> None:
    """Ollama's runner dying mid-answer ends the stream with an error event and response.failed
    (never response.completed)."""
    api = client(cluster)
    stream = await api.responses.create(model="llama3.2:latest", stream=True, store=False,
                                        input="[[tokens=20]] [[error-after=3]] go")
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert "response.completed" not in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.message


async def test_client_disconnect_cancels_at_ollama(cluster: Cluster) -> None:
    await cluster.reset_stats()
    async with cluster.http() as http:
        async with http.stream("POST", "/v1/responses", json={
                "model": "llama3.2:latest", "stream": True, "store": False,
                "input": "[[tokens=200]] [[delay=0.05]] go"}) as r:
            assert r.status_code == 200
            got = 0
            async for line in r.aiter_lines():
                if line.startswith("event: response.output_text.delta"):
                    got += 1
                    if got == 3:
                        break

    async def cancelled_at_ollama() -> bool:
        return any(c["path"] == "/api/chat" for c in await cluster.cancelled())

    await eventually(cancelled_at_ollama, interval_s=0.1)


async def test_codex_request_is_served(cluster: Cluster) -> None:
    """The request Codex sends with `wire_api = "responses"` and base URL …/api/v1: developer and
    user messages as input_text items, function tools after the hosted web_search Codex offers by
    default (not offered to the model here), tool_choice auto, parallel_tool_calls,
    reasoning with summary, store false, stream true, include encrypted reasoning,
    prompt_cache_key, text.verbosity; SSE events with their `event:` names."""
    await cluster.clear_requests()
    body = {
        "model": "qwen3:8b", "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "<permissions>none</permissions>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "<environment_context/>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "list the files"}]}],
        "tools": [{"type": "web_search", "external_web_access": False},
                  {"type": "function", "name": "shell", "description": "Runs a command",
                   "strict": False, "parameters": {
                       "type": "object", "properties": {"command": {
                           "type": "array", "items": {"type": "string"}}},
                       "required": ["command"], "additionalProperties": False}}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
        "text": {"verbosity": "medium"}}
    async with cluster.http() as http:
        async with http.stream("POST", "/api/v1/responses", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = "".join([chunk async for chunk in r.aiter_text()])
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: ")
        event = json.loads(data[len("data: "):])
        assert event["type"] == name[len("event: "):]
        events.append(event)
    assert events[-1]["type"] == "response.completed"
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "function_call"]
    assert json.loads(output[1]["arguments"]) == {"command": ["test"]}
    assert events[-1]["response"]["prompt_cache_key"] == "thread-1"
    sent = await last_chat(cluster)
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user", "user"]
    assert sent["think"] == "medium"
    assert [t["function"]["name"] for t in sent["tools"]] == ["shell"]
    assert events[-1]["response"]["tools"][0] == {"type": "web_search",
                                                  "external_web_access": False}


async def test_custom_tool_round_trip(cluster: Cluster) -> None:
    """A custom (free-form) tool such as Codex's apply_patch: offered to Ollama as a function of
    one string, called back as a custom_tool_call with its input (streamed with
    custom_tool_call_input events), and its output goes back as a tool result."""
    api = client(cluster)
    patch = {"type": "custom", "name": "apply_patch", "description": "Edit files",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    await cluster.clear_requests()
    first = await api.responses.create(model="llama3.2:latest", input="fix the bug",
                                       tools=[patch], store=False)  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert call.input == "test" and call.call_id
    offered = (await last_chat(cluster))["tools"][0]["function"]
    assert offered["name"] == "apply_patch" and "start: /.+/" in offered["description"]
    assert offered["parameters"]["properties"]["input"]["type"] == "string"
    stream = await api.responses.create(model="llama3.2:latest", input="fix it", stream=True,
                                        tools=[patch], store=False)  # type: ignore[list-item]
    kinds = [e.type async for e in stream]
    assert "response.custom_tool_call_input.done" in kinds
    await cluster.clear_requests()
    second = await api.responses.create(model="llama3.2:latest", tools=[patch], store=False,
                                        input=[  # type: ignore[list-item]
        {"role": "user", "content": "fix the bug"},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch",
         "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "applied"}])
    assert second.output_text.startswith("Echo:")
    messages = (await last_chat(cluster))["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "apply_patch",
                                                        "arguments": {"input": "test"}}
    assert messages[2] == {"role": "tool", "content": "applied", "tool_name": "apply_patch",
                           "tool_call_id": call.call_id}


async def test_ollama_options_pass_through(cluster: Cluster) -> None:
    """Ollama `options` (an extra, as for chat) reach Ollama and win; num_ctx too."""
    api = client(cluster, v1_root=True)
    await cluster.clear_requests()
    await api.responses.create(model="llama3.2:latest", input="hi", store=False,
                               temperature=0.2,
                               extra_body={"options": {"num_ctx": 4096, "temperature": 0.7,
                                                       "top_k": 5}})
    assert (await last_chat(cluster))["options"] == {"temperature": 0.7, "num_ctx": 4096,
                                                     "top_k": 5}


async def test_logprobs_included(cluster: Cluster) -> None:
    api = client(cluster)
    reply = await api.responses.create(model="llama3.2:latest", input="count [[tokens=4]]",
                                       include=["message.output_text.logprobs"], top_logprobs=2,
                                       store=False)
    part = reply.output[0].content[0]
    assert part.logprobs is not None and len(part.logprobs) == 4
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 2 for lp in part.logprobs)
    assert "".join(lp.token for lp in part.logprobs) == part.text


async def test_concurrent_stored_responses_are_all_kept(cluster: Cluster) -> None:
    """Twenty stored responses at once: each retrievable, none lost."""
    api = client(cluster)
    replies = await asyncio.gather(*(api.responses.create(model="llama3.2:latest",
                                                          input=f"number {i}")
                                     for i in range(20)))
    for i, reply in enumerate(replies):
        got = await api.responses.retrieve(reply.id)
        assert got.output_text == f"Echo: number {i}"


async def test_a_failure_before_the_answer_is_an_openai_error(cluster: Cluster) -> None:
    """Ollama's runner dying during a whole (non-streamed) answer is a 5xx in OpenAI's shape that
    names the worker; nothing is stored for it."""
    api = client(cluster)
    with pytest.raises(openai.APIStatusError) as caught:
        await api.responses.create(model="llama3.2:latest",
                                   input="[[tokens=20]] [[error-after=3]] go")
    assert caught.value.status_code >= 500
    assert caught.value.response.headers["x-worker-id"] in cluster.worker_ids
    body = caught.value.body
    assert isinstance(body, dict) and body["message"] and body["type"]
    with sqlite3.connect(cluster.root / "server" / "pendra.db") as db:
        kept = db.execute("SELECT count(*) FROM stored_responses WHERE input_items LIKE ?",
                          ("%error-after%",)).fetchone()[0]
    assert kept == 0


async def test_a_chain_is_held_to_the_body_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Continuing a conversation never makes a request bigger than a client could send: a stored
    turn of 120 kB fits a 200 kB body limit, and so does a new 120 kB input on its own, but the
    two together (continuing from the first) are 413 naming previous_response_id, sent to no
    worker; a short continuation still works."""
    async with start_cluster(tmp_path_factory.mktemp("small-body"), workers=("alpha",),
                             server_env={"MAX_BODY_BYTES": "200000"}) as small:
        api = client(small)
        big = "word " * 24_000
        first = await api.responses.create(model="llama3.2:latest", input=big)
        await api.responses.create(model="llama3.2:latest", input=big, store=False)
        await small.clear_requests()
        with pytest.raises(openai.APIStatusError) as caught:
            await api.responses.create(model="llama3.2:latest", input=big,
                                       previous_response_id=first.id)
        assert caught.value.status_code == 413
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "previous_response_id"
        assert await small.recorded("/api/chat") == []
        short = await api.responses.create(model="llama3.2:latest", input="and?",
                                           previous_response_id=first.id, store=False)
        assert short.status == "completed"
