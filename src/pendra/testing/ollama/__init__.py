"""A faithful emulator of Ollama's native HTTP API, run as a real process by tests and benches.

Built from shared/reference/ollama-api.md (and Ollama's Go source where the reference is silent):
exact keys, statuses and error texts; NDJSON streaming with errors as a trailing ``{"error": …}``
line once streaming has begun; version-dependent shapes (facts.py); context-window truncation by
``num_ctx``; options read as Ollama reads them; images for vision models; log probabilities;
layered pull progress. It imports nothing from Pendra's backend, server or worker: it states
Ollama's facts itself, so it can catch the backend getting them wrong.

Modules: ``facts`` (versions, option types, error texts), ``wire`` (decoding, encoding, errors),
``models`` (what a model is; installed and pullable models), ``content`` (what models say, and the
steering markers), ``answers`` (one chat/generate answer), ``state`` (settings and server state),
``inference`` / ``management`` / ``control`` (one handler per route), ``app`` (routes, command line).

Test-only steering, never sent by real clients:
- prompt markers in the last message: ``[[tokens=N]]`` reply length, ``[[delay=S]]`` seconds before
  each token, ``[[error-after=N]]`` the runner dies after N tokens, ``[[load=S]]`` seconds of
  loading before any byte, ``[[stall-after=N]]`` the stream goes silent after N tokens (content.py);
- ``/_emulator/*``: recorded requests, stats (``/api/show`` concurrency, cancelled streams, reloads,
  cancelled pulls), settings (``latency_s``, ``show_delay_s``, ``token_delay_s``,
  ``pull_bytes_per_s``, ``default_num_ctx``, ``fail_show_for``, ``fail_after_tokens``,
  ``die_during_pull``, ``version``) and models (control.py, state.Settings).
"""
