"""llama.cpp's llama-server facts, from tools/server/README.md and server.cpp:

- ``GET /v1/models`` answers ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by": "llamacpp", "meta": {"vocab_type", "n_vocab", "n_ctx_train", "n_embd", "n_params",
  "size"}}]}`` (the model's alias or path is the id).
- ``GET /health`` answers ``{"status": "ok"}``. There is no ``/version`` route (404).
- Errors: ``{"error": {"code": <status>, "message", "type"}}`` with ``type`` such as
  ``invalid_request_error`` or ``not_found_error``.
- A llama-server serves the one model it was started with (``-m``) and ignores the request's
  ``model`` field: any name gets that model's answer.
- Streaming as OpenAI: ``data: <chunk>`` events, ``data: [DONE]`` at the end; usage in the last
  chunk when ``stream_options.include_usage`` is set.
- ``--api-key`` guards the API routes: 401 ``Invalid API Key`` (``authentication_error``).
"""

OWNED_BY = "llamacpp"
IGNORES_MODEL_NAME = True
DEFAULT_MODELS = [
    {"id": "qwen2.5-7b-instruct-q4_k_m.gguf", "task": "chat", "context": 32768},
]


def model_entry(model: dict, created: int) -> dict:
    return {"id": model["id"], "object": "model", "created": created, "owned_by": OWNED_BY,
            "meta": {"vocab_type": 2, "n_vocab": 152064, "n_ctx_train": model["context"],
                     "n_embd": 3584, "n_params": 7615616512, "size": 4683073536}}


def error_body(message: str, kind: str, status: int, param: str | None = None) -> dict:
    return {"error": {"code": status, "message": message, "type": kind}}

# The routes an API key guards, and the 401 answer without it.
API_KEY_GUARDS = ("/v1/",)
UNAUTHORIZED = {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
