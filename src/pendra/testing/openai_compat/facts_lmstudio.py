"""LM Studio's facts, from its developer documentation (lmstudio-ai/docs, 1_developer/2_rest and
openai-compat pages) and the ``lmstudio`` SDK's model-info types:

- Port 1234 by default. OpenAI-compatible ``/v1/models``, ``/v1/chat/completions``,
  ``/v1/embeddings`` (``owned_by`` is the publisher, e.g. ``organization_owner``).
- REST API v1 (LM Studio 0.4+): ``GET /api/v1/models`` answers ``{"models": [...]}``; each entry
  ``{"type": "llm" | "embedding", "publisher", "key", "display_name", "architecture",
  "quantization": {"name", "bits_per_weight"}, "size_bytes", "params_string",
  "loaded_instances": [{"id", "config": {"context_length", …}}], "max_context_length",
  "format": "gguf" | "mlx" | null, "capabilities": {"vision", "trained_for_tool_use"}}``
  (``architecture``, ``capabilities`` absent for embedding models).
- ``POST /api/v1/models/download {"model", "quantization"?}`` (``model``: a catalog identifier
  or an exact Hugging Face link; ``quantization`` only for links) answers a job: ``{"job_id",
  "status": "downloading" | "paused" | "completed" | "failed", "total_size_bytes", "started_at"}``,
  or ``{"status": "already_downloaded"}`` with no job id. ``GET
  /api/v1/models/download/status/{job_id}`` answers the job with ``downloaded_bytes``,
  ``bytes_per_second`` and ``estimated_completion`` while downloading, ``completed_at`` when done.
  There is no REST endpoint to delete a model or to cancel a download.
- REST API v0 (0.3.6+): ``GET /api/v0/models`` answers ``{"object": "list", "data": [{"id",
  "object": "model", "type": "llm" | "vlm" | "embeddings", "publisher", "arch",
  "compatibility_type", "quantization", "state": "loaded" | "not-loaded",
  "max_context_length"}]}``.
- Models not loaded are loaded on their first request (just-in-time loading, on by default).
- Errors: ``{"error": {"message", "type", "param", "code"}}`` in OpenAI's shape.
- With authentication on (LM Studio 0.4+), every route wants ``Authorization: Bearer <token>``.
"""

DEFAULT_MODELS = [
    {"id": "qwen/qwen3-8b", "task": "chat", "context": 32768, "loaded_context": 4096,
     "publisher": "qwen", "display_name": "Qwen3 8B", "architecture": "qwen3",
     "quantization": "Q4_K_M", "bits": 4, "size_bytes": 5027783488, "params": "8B",
     "format": "gguf", "vision": False, "tools": True, "loaded": True},
    {"id": "text-embedding-nomic-embed-text-v1.5", "task": "embed", "context": 2048,
     "publisher": "nomic-ai", "display_name": "Nomic Embed Text v1.5", "quantization": "F16",
     "bits": 16, "size_bytes": 274290560, "params": None, "format": "gguf", "loaded": False},
]
# What the download API can fetch in the emulator (catalogue identifiers → size in bytes).
DOWNLOADABLE = {
    "ibm/granite-4-micro": {"task": "chat", "context": 131072, "publisher": "ibm",
                            "display_name": "Granite 4 Micro", "architecture": "granite",
                            "quantization": "Q4_K_M", "bits": 4, "size_bytes": 2_000_000,
                            "params": "3B", "format": "gguf", "vision": False, "tools": True},
    "qwen/qwen3-4b": {"task": "chat", "context": 32768, "publisher": "qwen",
                      "display_name": "Qwen3 4B", "architecture": "qwen3",
                      "quantization": "Q4_K_M", "bits": 4, "size_bytes": 2_500_000,
                      "params": "4B", "format": "gguf", "vision": False, "tools": True},
}
HUGGING_FACE = "https://huggingface.co/"
QUANTIZATION_ONLY_FOR_LINKS = "quantization is only supported for Hugging Face links"


def from_hugging_face(link: str, quantization: str | None) -> dict | None:
    """What a Hugging Face GGUF repository link downloads as (emulated: any repository of the form
    ``<owner>/<name>-GGUF`` exists; the key is ``<name>`` lower-cased, as LM Studio names it)."""
    path = link[len(HUGGING_FACE):].strip("/").split("/")
    if len(path) != 2 or not path[1].lower().endswith("-gguf"):
        return None
    name = path[1][:-len("-gguf")].lower()
    embed = "embed" in name
    return {"id": name, "task": "embed" if embed else "chat", "context": 8192,
            "publisher": path[0], "display_name": path[1][:-5], "architecture": None if embed
            else "llama", "quantization": quantization or "Q4_K_M", "bits": 4,
            "size_bytes": 1_500_000, "params": None, "format": "gguf", "vision": False,
            "tools": False}


NOT_FOUND = "Model \"{model}\" not found. Please check the model name and try again."
JOB_STATES = ("downloading", "paused", "completed", "failed")


def v1_entry(model: dict) -> dict:
    entry = {"type": "embedding" if model["task"] == "embed" else "llm",
             "publisher": model.get("publisher", ""), "key": model["id"],
             "display_name": model.get("display_name", model["id"]),
             "quantization": {"name": model.get("quantization"), "bits_per_weight": model.get("bits")},
             "size_bytes": model.get("size_bytes", 0), "params_string": model.get("params"),
             "loaded_instances": ([{"id": model["id"],
                                    "config": {"context_length": model.get("loaded_context",
                                                                           model["context"])}}]
                                  if model.get("loaded") else []),
             "max_context_length": model["context"], "format": model.get("format", "gguf")}
    if model["task"] != "embed":
        entry["architecture"] = model.get("architecture")
        entry["capabilities"] = {"vision": bool(model.get("vision")),
                                 "trained_for_tool_use": bool(model.get("tools"))}
        entry["description"] = None
    return entry


def v0_entry(model: dict) -> dict:
    kind = "embeddings" if model["task"] == "embed" else ("vlm" if model.get("vision") else "llm")
    return {"id": model["id"], "object": "model", "type": kind,
            "publisher": model.get("publisher", ""), "arch": model.get("architecture") or "bert",
            "compatibility_type": model.get("format", "gguf"),
            "quantization": model.get("quantization"),
            "state": "loaded" if model.get("loaded") else "not-loaded",
            "max_context_length": model["context"]}


def error_body(message: str, kind: str, status: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": "model_not_found" if status == 404 else None}}

# The routes an API key guards, and the 401 answer without it.
API_KEY_GUARDS = ("/v1/", "/api/")
UNAUTHORIZED = {"error": {"message": "Invalid or missing API token", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
