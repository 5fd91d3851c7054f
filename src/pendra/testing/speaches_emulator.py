"""Run the Speaches emulator (``pendra.testing.speaches``; ``--impostor`` for a vLLM-shaped server).

Run: ``python -m pendra.testing.speaches_emulator --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

from pendra.testing.speaches.app import build_app, main

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    main()
