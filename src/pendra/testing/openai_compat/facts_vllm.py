"""vLLM's facts, from its documentation and source (vllm/entrypoints/openai/api_server.py,
protocol.py, serving_models.py, serving_chat.py):

- ``GET /version`` answers ``{"version": "<vllm version>"}``; ``GET /health`` answers 200 with an
  empty body.
- ``GET /v1/models`` answers ``{"object": "list", "data": [ModelCard]}``; a ModelCard is ``{"id",
  "object": "model", "created", "owned_by": "vllm", "root", "parent", "max_model_len",
  "permission": [ModelPermission]}``: ``id`` is the served model name (``--served-model-name``,
  default the ``--model`` path), ``root`` the ``--model`` path, ``parent`` null (a LoRA adapter's
  parent is its base model's name).
- Errors: ``{"error": {"message", "type", "param", "code"}}`` (ErrorResponse/ErrorInfo since
  v0.10; before that the fields sat at the top level with ``"object": "error"``). An unknown model
  is 404 ``NotFoundError`` "The model `<name>` does not exist."; a bad request 400
  ``BadRequestError``.
- Streaming: Server-Sent Events, each ``data: <chat.completion.chunk JSON>`` and a blank line,
  ending ``data: [DONE]``; the first chunk carries ``delta.role``; with
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk with
  ``"choices": []`` carries the usage. An error after streaming began is one ``data:`` event holding
  the error body.
- Tool calls: with ``tools`` and ``tool_choice`` "auto" vLLM answers ``tool_calls`` only when
  started with ``--enable-auto-tool-choice --tool-call-parser …``; the emulator behaves as one
  started so (a named ``tool_choice`` is guided decoding and works on any vLLM).
  JSON mode (``response_format``) is guided decoding too.
- One model per process: ``/v1/models`` lists what it was launched with (plus LoRA adapters);
  there is no model install or removal API.
- ``--api-key`` (or ``VLLM_API_KEY``) guards the ``/v1`` routes: without ``Authorization: Bearer
  <key>`` they answer 401 ``{"error": "Unauthorized"}``; ``/version`` and ``/health`` stay open.
"""

VERSION = "0.11.0"
OWNED_BY = "vllm"
NOT_FOUND = "The model `{model}` does not exist."
NOT_FOUND_TYPE = "NotFoundError"
BAD_REQUEST_TYPE = "BadRequestError"
# A model started for the other task (generate vs pooling) refuses the API it does not serve.
WRONG_TASK = "The model does not support {api} API"

DEFAULT_MODELS = [
    {"id": "meta-llama/Llama-3.1-8B-Instruct", "task": "chat", "context": 8192},
]


def model_card(model: dict, created: int) -> dict:
    return {"id": model["id"], "object": "model", "created": created, "owned_by": OWNED_BY,
            "root": model.get("root", model["id"]), "parent": None,
            "max_model_len": model["context"],
            "permission": [{"id": f"modelperm-{abs(hash(model['id'])) % 10**12:012d}",
                            "object": "model_permission", "created": created,
                            "allow_create_engine": False, "allow_sampling": True,
                            "allow_logprobs": True, "allow_search_indices": False,
                            "allow_view": True, "allow_fine_tuning": False, "organization": "*",
                            "group": None, "is_blocking": False}]}


def error_body(message: str, kind: str, status: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}

# The routes an API key guards, and the 401 answer without it.
API_KEY_GUARDS = ("/v1/",)
UNAUTHORIZED = {"error": "Unauthorized"}
