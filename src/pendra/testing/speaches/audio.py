"""Decoding an upload as the emulator claims to, and the deterministic transcript it "hears".

The emulator decodes WAV (RIFF/WAVE, PCM, read with the stdlib ``wave`` module) and Speaches'
raw ``audio/pcm``/``audio/raw`` (s16le mono at 16 kHz); anything else is refused as Speaches
refuses what PyAV cannot decode (415), and an empty file as Speaches does (400). The transcript
is made from the audio's SHA-256 (the same bytes always give the same words) and its duration
(one segment per started ``SEGMENT_S`` seconds), so a test can predict it and tell two files apart.
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass

from pendra.testing.speaches import facts

SEGMENT_S = 5.0
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliett", "kilo", "lima", "mike", "november", "oscar", "papa")
WORDS_PER_SEGMENT = 4


class Undecodable(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    duration_s: float
    digest: bytes


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str  # with Whisper's leading space


def decode(data: bytes, content_type: str) -> Decoded:
    """The audio's duration, or Undecodable with Speaches' status and text."""
    if not data:
        raise Undecodable(facts.EMPTY_STATUS, facts.EMPTY_DETAIL)
    if content_type in facts.RAW_PCM_TYPES:
        frames = len(data) // 2
        return Decoded(frames / facts.SAMPLE_RATE, hashlib.sha256(data).digest())
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate, frames = reader.getframerate(), reader.getnframes()
            reader.readframes(frames)  # a truncated body fails here, as a decoder would
    except (wave.Error, EOFError, ValueError) as exc:
        raise Undecodable(facts.UNDECODABLE_STATUS, facts.UNDECODABLE_DETAIL) from exc
    if rate <= 0 or frames <= 0:
        raise Undecodable(facts.EMPTY_STATUS, facts.EMPTY_DETAIL)
    return Decoded(frames / rate, hashlib.sha256(data).digest())


def segments(audio: Decoded) -> list[Segment]:
    """One segment per started ``SEGMENT_S`` seconds, its words picked by the digest."""
    count = max(1, int(-(-audio.duration_s // SEGMENT_S)))
    found = []
    for i in range(count):
        picks = [audio.digest[(i * WORDS_PER_SEGMENT + j) % len(audio.digest)] % len(WORDS)
                 for j in range(WORDS_PER_SEGMENT)]
        text = " " + " ".join(WORDS[p] for p in picks).capitalize() + "."
        found.append(Segment(i, round(i * SEGMENT_S, 3),
                             round(min((i + 1) * SEGMENT_S, audio.duration_s), 3), text))
    return found


def text_of(found: list[Segment]) -> str:
    """whisper.py segments_to_text: the segments' texts joined, stripped."""
    return "".join(s.text for s in found).strip()
