"""Emulators of OpenAI-compatible servers that Pendra talks to: vLLM, LM Studio, llama-server.

One core (``core``: the OpenAI chat/embeddings surface these servers share, SSE streaming, test
steering), one module of facts per project (``facts_vllm``, ``facts_lmstudio``, ``facts_llamacpp``:
versions, list shapes, error bodies, each naming its source) and one app (``app``: the routes each
flavour serves and the command line). Like the Ollama emulator, it imports nothing from Pendra's
backends, server or worker: it states each project's facts itself, so it can catch the backends
getting them wrong.

Run: ``python -m pendra.testing.openai_compat --flavour vllm --port 0`` prints
``READY http://127.0.0.1:<port>`` (flavours: vllm, lmstudio, llamacpp).

Test-only steering, never sent by real clients:
- prompt markers in the last message: ``[[tokens=N]]`` reply length, ``[[delay=S]]`` seconds
  before each token, ``[[error-after=N]]`` the stream ends with an error event after N tokens;
- ``/_emulator/requests`` (GET, DELETE): every request recorded with its JSON body;
  ``/_emulator/config`` (POST): ``token_delay_s``, ``download_bytes_per_s``, ``fail_downloads``;
  ``/_emulator/models`` (POST a model spec; DELETE ``/_emulator/models/{id}``).
"""
