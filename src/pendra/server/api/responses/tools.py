"""The Responses API's tools as the workers' chat offers them, and the model's calls back.

Rules:
- ``function`` tools are chat function tools. The function tools of a ``namespace`` are offered
  as ``<namespace>__<name>``; a call to one comes back as a ``function_call`` with ``name`` and
  ``namespace`` apart again.
- A ``custom`` tool (free-form text input, e.g. Codex's ``apply_patch``) is offered as a function
  taking one string, ``input``; its description carries the tool's grammar, which Ollama cannot
  enforce. A call comes back as a ``custom_tool_call`` item with that ``input``.
- Tools OpenAI runs on its own servers (``HOSTED``: web search, file search, code interpreter,
  image generation, remote MCP, tool search) cannot run here. Under ``tool_choice`` ``auto`` or
  ``none`` they are not offered to the model (which then answers without them, as it may under
  ``auto``) and are echoed as sent; a ``tool_choice`` that forces one is refused. Codex sends
  ``web_search`` by default, so refusing it would refuse every Codex request.
- Any other tool type (client-run built-ins such as ``local_shell``, ``shell``, ``computer``) is
  refused with 400 naming ``tools[i].type``.
- ``tool_choice``: ``none``/``auto`` as they are, a named function or custom tool as chat's named
  function, ``allowed_tools`` in mode ``auto`` as the offered subset. ``required`` (and
  ``allowed_tools`` in mode ``required``) cannot be honoured by Ollama (translate.offered_tools,
  the worker's one rule) and is refused.
- History items name their tools the same way: ``function_call`` (with its ``namespace``) and
  ``custom_tool_call`` become the assistant's tool calls; their outputs become ``tool`` messages.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from pendra.errors import InvalidRequest

HOSTED = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                    "web_search_preview_2025_03_11", "file_search", "code_interpreter",
                    "image_generation", "mcp", "tool_search"})
NAME_CHARS = 64
NAMESPACE_JOIN = "__"


@dataclass(frozen=True)
class Offered:
    """One tool as the model sees it (``chat_name``) and as the client named it."""

    kind: str  # "function" or "custom"
    name: str
    namespace: str | None = None

    @property
    def chat_name(self) -> str:
        return chat_name(self.name, self.namespace)


def chat_name(name: str, namespace: str | None) -> str:
    return f"{namespace}{NAMESPACE_JOIN}{name}" if namespace else name


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string", param=where)
    return value


def _name(tool: dict[str, Any], where: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_CHARS or not all(
            c.isascii() and (c.isalnum() or c in "_-") for c in name):
        raise InvalidRequest(f"{where}.name must be 1 to {NAME_CHARS} letters, digits, _ or -",
                             param=f"{where}.name")
    return name


@dataclass
class ToolMap:
    """The request's tools: what the model is offered, and how to name its calls back."""

    offered: dict[str, Offered] = field(default_factory=dict)
    chat: list[dict[str, Any]] = field(default_factory=list)
    hosted: list[str] = field(default_factory=list)

    def _add(self, offered: Offered, function: dict[str, Any], where: str) -> None:
        if offered.chat_name in self.offered:
            raise InvalidRequest(f"{where}.name: two tools are named {offered.chat_name!r}",
                                 param=f"{where}.name")
        self.offered[offered.chat_name] = offered
        self.chat.append({"type": "function", "function": {"name": offered.chat_name,
                                                           **function}})

    def add_function(self, tool: dict[str, Any], where: str, namespace: str | None) -> None:
        function: dict[str, Any] = {}
        if (description := tool.get("description")) is not None:
            function["description"] = _text(description, f"{where}.description")
        if (parameters := tool.get("parameters")) is not None:
            if not isinstance(parameters, dict):
                raise InvalidRequest(f"{where}.parameters must be a JSON schema object",
                                     param=f"{where}.parameters")
            function["parameters"] = parameters
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        self._add(Offered("function", _name(tool, where), namespace), function, where)

    def add_custom(self, tool: dict[str, Any], where: str, namespace: str | None) -> None:
        description = tool.get("description")
        text = _text(description, f"{where}.description") if description is not None else ""
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            definition = fmt.get("definition")
            if isinstance(definition, str) and definition:
                text += (f"\n\nThe input must follow this {fmt.get('syntax', 'grammar')} "
                         f"grammar:\n{definition}")
        function = {"description": text.strip(),
                    "parameters": {"type": "object", "required": ["input"],
                                   "properties": {"input": {
                                       "type": "string",
                                       "description": "The tool's raw text input"}}}}
        self._add(Offered("custom", _name(tool, where), namespace), function, where)


def tool_map(tools: list[dict[str, Any]] | None) -> ToolMap:
    found = ToolMap()
    for i, tool in enumerate(tools or []):
        where = f"tools[{i}]"
        kind = tool.get("type")
        if kind == "function":
            found.add_function(tool, where, None)
        elif kind == "custom":
            found.add_custom(tool, where, None)
        elif kind == "namespace":
            namespace = _name(tool, where)
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise InvalidRequest(f"{where}.tools must be a list", param=f"{where}.tools")
            for j, member in enumerate(inner):
                at = f"{where}.tools[{j}]"
                member_kind = member.get("type") if isinstance(member, dict) else None
                if member_kind == "function":
                    found.add_function(member, at, namespace)
                elif member_kind == "custom":
                    found.add_custom(member, at, namespace)
                else:
                    raise InvalidRequest(f"{at}.type: a namespace holds function and custom "
                                         f"tools, not {member_kind!r}", param=f"{at}.type")
        elif kind in HOSTED:
            found.hosted.append(str(kind))
        else:
            raise InvalidRequest(f"{where}.type: {kind!r} tools are not supported (use function, "
                                 "custom or namespace tools; OpenAI's hosted tools are not "
                                 "offered)", param=f"{where}.type")
    return found


def chat_tool_choice(choice: Any, tools: ToolMap) -> tuple[Any, list[dict[str, Any]]]:
    """(chat's ``tool_choice``, the chat tools to offer) for Responses' ``tool_choice``."""
    if choice is None or isinstance(choice, str):
        return choice, tools.chat
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if name is None and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name")
        if not isinstance(name, str):
            raise InvalidRequest(f"tool_choice.name is required for a {kind} tool",
                                 param="tool_choice.name")
        namespace = choice.get("namespace")
        name = chat_name(name, namespace if isinstance(namespace, str) else None)
        return {"type": "function", "function": {"name": name}}, tools.chat
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode == "required":
            raise InvalidRequest("tool_choice.mode \"required\" cannot be honoured: Ollama cannot "
                                 "force a tool call; use \"auto\"", param="tool_choice.mode")
        if mode != "auto":
            raise InvalidRequest("tool_choice.mode must be \"auto\" or \"required\"",
                                 param="tool_choice.mode")
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise InvalidRequest("tool_choice.tools must be a list", param="tool_choice.tools")
        names = {chat_name(t.get("name", ""), t.get("namespace")) for t in allowed
                 if isinstance(t, dict) and t.get("type") in ("function", "custom")}
        return "auto", [t for t in tools.chat if t["function"]["name"] in names]
    if kind in HOSTED:
        raise InvalidRequest(f"tool_choice: {kind!r} is one of OpenAI's hosted tools, which "
                             "cannot run here", param="tool_choice.type")
    raise InvalidRequest(f"tool_choice: type {kind!r} is not supported (use \"none\", \"auto\", "
                         "{\"type\": \"function\", \"name\": …} or allowed_tools)",
                         param="tool_choice.type")


# --- the model's calls ---------------------------------------------------------------------------


def output_item(item_id: str, call: dict[str, Any], tools: ToolMap) -> dict[str, Any]:
    """The output item for one chat tool call: a ``function_call`` (with its ``namespace``) or a
    ``custom_tool_call``."""
    function = call.get("function") or {}
    name = str(function.get("name", ""))
    arguments = function.get("arguments") or "{}"
    call_id = call.get("id") or "call_" + secrets.token_hex(12)
    offered = tools.offered.get(name)
    if offered is not None and offered.kind == "custom":
        text = arguments
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
            text = parsed["input"]
        item = {"id": "ctc_" + item_id.partition("_")[2], "type": "custom_tool_call",
                "status": "completed", "call_id": call_id, "name": offered.name, "input": text}
    else:
        item = {"id": item_id, "type": "function_call", "status": "completed",
                "call_id": call_id, "name": offered.name if offered else name,
                "arguments": arguments}
    if offered is not None and offered.namespace:
        item["namespace"] = offered.namespace
    return item


def history_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``function_call`` or ``custom_tool_call`` history item as chat's tool call."""
    call_id = _text(item.get("call_id"), f"{where}.call_id")
    name = _text(item.get("name"), f"{where}.name")
    if not name or len(name) > NAME_CHARS:
        raise InvalidRequest(f"{where}.name must be 1 to {NAME_CHARS} characters",
                             param=f"{where}.name")
    namespace = item.get("namespace")
    if namespace is not None:
        namespace = _text(namespace, f"{where}.namespace")
    if item.get("type") == "custom_tool_call":
        arguments = json.dumps({"input": _text(item.get("input"), f"{where}.input")})
    else:
        arguments = _text(item.get("arguments", "{}"), f"{where}.arguments") or "{}"
        try:
            json.loads(arguments)
        except ValueError as exc:
            raise InvalidRequest(f"{where}.arguments is not valid JSON",
                                 param=f"{where}.arguments") from exc
    return {"id": call_id, "type": "function",
            "function": {"name": chat_name(name, namespace), "arguments": arguments}}
