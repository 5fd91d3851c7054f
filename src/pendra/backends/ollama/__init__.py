"""Ollama, the first backend: client, discovery, translation."""
