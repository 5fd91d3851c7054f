"""The field types every public request body is built from: text that is valid Unicode, and
free-form JSON with bounded nesting.

Rules:
- Every string a client sends, wherever it sits (a typed field, a key, inside free-form JSON, an
  extra field), must be valid Unicode: a lone surrogate (``"\\ud800"`` in the JSON) cannot be
  encoded as UTF-8 for a worker, so it is refused here with 400 naming the field.
- Free-form values (a tool's JSON schema, ``response_format.json_schema.schema``, extra fields
  passed through to the worker) nest at most ``MAX_JSON_DEPTH`` levels below where they sit. The
  typed part of a body adds at most ``TYPED_DEPTH`` levels, so no accepted body nests deeper than
  their sum, far inside what the worker frame's serialiser handles (~255).
- ``Body`` is the base of every request model: unknown fields pass through (a worker may know
  them) but are free-form values held to the same rules, keys included.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainValidator,
                      WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError

# Nesting allowed inside one free-form value: deep JSON schemas of real tools stay under ~15.
MAX_JSON_DEPTH = 32
# The deepest typed path of any body (messages[i].content[j].image_url.url and the like).
TYPED_DEPTH = 6
# Longest model name: Ollama tags are namespace/name:tag, well under this.
MAX_MODEL_CHARS = 256


def _utf8(text: str, path: str = "") -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "unicode", "text is not valid Unicode (a lone surrogate at index {index}{where})",
            {"index": exc.start, "where": f" of {path}" if path else ""}) from exc
    return text


def _check(value: Any, depth: int, path: str) -> None:
    if isinstance(value, str):
        _utf8(value, path)
    elif isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise PydanticCustomError(
                "json_depth", "nested more than {limit} levels deep (at {path})",
                {"limit": MAX_JSON_DEPTH, "path": path or "the top"})
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            inner = f"{path}.{key}".lstrip(".") if isinstance(key, str) else f"{path}[{key}]"
            if isinstance(key, str):
                _utf8(key, f"the key {inner}")
            _check(item, depth + 1, inner)
    elif not (value is None or isinstance(value, bool | int | float)):
        raise PydanticCustomError("json_type", "not a JSON value")


def _bounded_json(value: Any) -> Any:
    _check(value, 0, "")
    return value


def _bounded_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PydanticCustomError("dict_type", "must be a JSON object")
    _check(value, 0, "")
    return value


# A string that can be sent on: valid Unicode.
Text = Annotated[str, AfterValidator(_utf8)]
# Any JSON value, nested at most MAX_JSON_DEPTH deep, every string and key valid Unicode.
FreeJson = Annotated[Any, PlainValidator(_bounded_json), WithJsonSchema({})]
# The same, but it must be an object (a JSON schema, say).
FreeObject = Annotated[dict[str, Any], PlainValidator(_bounded_object),
                       WithJsonSchema({"type": "object"})]
ModelName = Annotated[Text, Field(min_length=1, max_length=MAX_MODEL_CHARS)]


class Body(BaseModel):
    """A request body or a part of one: typed fields checked, extra fields free-form and bounded."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    __pydantic_extra__: dict[str, FreeJson] = Field(init=False)

    @model_validator(mode="after")
    def _extra_keys(self) -> Body:
        for key in self.__pydantic_extra__ or {}:
            _utf8(key)
        return self

    def to_worker(self) -> dict[str, Any]:
        """What the worker gets: the fields as sent (typed ones in canonical form)."""
        return self.model_dump(exclude_unset=True, by_alias=True)
