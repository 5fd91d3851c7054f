"""Pendra: one OpenAI-compatible API in front of your own fleet of Ollama hosts."""

__version__ = "0.1.0"
