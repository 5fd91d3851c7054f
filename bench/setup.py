"""What the shared benchmarks (latency, throughput, streaming, embeddings, nothing traded, LiteLLM)
have in common: one emulated Ollama, one ``pendra up`` in front of it, and — when the LiteLLM
comparison is asked for — LiteLLM's proxy in front of the same emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.deploy import Deployment, pendra_up, temp_root
from bench.litellm_proxy import Proxy, litellm_proxy
from bench.load import Relay, pendra_relay
from pendra.testing.servers import EmulatorProcess, run_emulator


@dataclass
class Setup:
    quick: bool
    root: Path
    emulator: EmulatorProcess
    pendra: Deployment
    litellm: Proxy

    @property
    def emulator_url(self) -> str:
        return self.emulator.base_url

    @property
    def relay(self) -> Relay:
        """Pendra as a relay under test."""
        return pendra_relay(self.pendra)


@asynccontextmanager
async def shared_setup(quick: bool, *, with_litellm: bool = False) -> AsyncIterator[Setup]:
    async with AsyncExitStack() as stack:
        root = await stack.enter_async_context(temp_root())
        emulator = await stack.enter_async_context(run_emulator())
        pendra = await stack.enter_async_context(pendra_up(root, emulator.base_url))
        litellm = (await stack.enter_async_context(litellm_proxy(root, emulator.base_url))
                   if with_litellm else Proxy(None, "not asked for"))
        yield Setup(quick, root, emulator, pendra, litellm)
