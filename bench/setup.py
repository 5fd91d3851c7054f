"""What benchmarks 1–3 share: one emulated Ollama and one ``pendra up`` in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.deploy import Deployment, pendra_up, temp_root
from pendra.testing.servers import EmulatorProcess, run_emulator


@dataclass
class Setup:
    quick: bool
    root: Path
    emulator: EmulatorProcess
    pendra: Deployment

    @property
    def emulator_url(self) -> str:
        return self.emulator.base_url


@asynccontextmanager
async def shared_setup(quick: bool) -> AsyncIterator[Setup]:
    async with temp_root() as root, run_emulator() as emulator, \
            pendra_up(root, emulator.base_url) as pendra:
        yield Setup(quick, root, emulator, pendra)
