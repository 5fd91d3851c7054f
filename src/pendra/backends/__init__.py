"""Inference backends a worker can serve through (Ollama first), behind one interface."""
