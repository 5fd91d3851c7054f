"""Test infrastructure that ships with Pendra: the Ollama emulator and process helpers."""
