"""Run the Ollama emulator (the package ``pendra.testing.ollama``, whose docstring lists what it
emulates and the test-only steering: ``[[tokens=N]]``, ``[[delay=S]]``, ``[[error-after=N]]``,
``[[load=S]]``, ``[[stall-after=N]]`` prompt markers and the ``/_emulator/*`` control surface).

Run: ``python -m pendra.testing.ollama_emulator --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

from pendra.testing.ollama.app import build_app, load_models, main
from pendra.testing.ollama.state import Emulator, Settings

__all__ = ["Emulator", "Settings", "build_app", "load_models", "main"]

if __name__ == "__main__":
    main()
