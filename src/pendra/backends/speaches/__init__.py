"""The Speaches backend: Whisper-family transcription behind an OpenAI-compatible API."""

from pendra.backends.speaches.backend import SpeachesBackend

__all__ = ["SpeachesBackend"]
